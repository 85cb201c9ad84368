"""SGLang's native ``/generate`` as llama-server's native ``/completion``: the request and the answer.

The adapter's route (llamacpp_adapter.py) sends the one and answers with the other.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from sandserve.engines.gbnf import regex_to_gbnf
from sandserve.errors import SandserveError


class BadRequest(Exception):
    pass


def completion_body(request: dict[str, Any]) -> dict[str, Any]:
    """SGLang's ``/generate`` request as llama-server's native ``/completion`` request."""
    prompt = request.get("text", request.get("input_ids"))
    if prompt is None:
        raise BadRequest("Either text or input_ids should be provided.")
    params = request.get("sampling_params") or {}
    body: dict[str, Any] = {
        "prompt": prompt,
        "n_predict": int(params.get("max_new_tokens", 128)),
        "cache_prompt": True,
        "return_tokens": True,
    }
    for name in ("temperature", "top_p", "top_k", "min_p", "ignore_eos", "seed"):
        if params.get(name) is not None:
            body[name] = params[name]
    if params.get("stop") is not None:
        body["stop"] = [params["stop"]] if isinstance(params["stop"], str) else list(params["stop"])
    constraints = [name for name in ("regex", "ebnf", "json_schema") if params.get(name) is not None]
    if len(constraints) > 1:
        raise BadRequest(f"Only one constraint can be set at a time, got {', '.join(constraints)}.")
    try:
        if params.get("regex") is not None:
            body["grammar"] = regex_to_gbnf(params["regex"])
        elif params.get("ebnf") is not None:
            body["grammar"] = params["ebnf"]
        elif params.get("json_schema") is not None:
            schema = params["json_schema"]
            body["json_schema"] = json.loads(schema) if isinstance(schema, str) else schema
    except (SandserveError, ValueError) as exc:
        raise BadRequest(f"Failed to compile the constraint: {exc}") from exc
    return body


def generate_answer(done: dict[str, Any], text: str, rid: str, started: float) -> dict[str, Any]:
    """llama-server's final ``/completion`` answer in SGLang's ``/generate`` shape."""
    completion = int(done.get("tokens_predicted") or 0)
    finish: dict[str, Any] | None
    if not done.get("stop", True):
        finish = None  # a streamed piece before the last one
    elif done.get("stop_type") == "limit":
        finish = {"type": "length", "length": completion}
    else:
        finish = {"type": "stop", "matched": done.get("stopping_word") or None}
    return {
        "text": text,
        "output_ids": done.get("tokens") or [],
        "meta_info": {
            "id": rid,
            "finish_reason": finish,
            "prompt_tokens": int(done.get("tokens_evaluated") or 0),
            "completion_tokens": completion,
            "cached_tokens": int((done.get("timings") or {}).get("cache_n") or 0),
            "e2e_latency": round(time.monotonic() - started, 4),
        },
    }


def bad_request(message: str) -> web.Response:
    error = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    return web.json_response(error, status=400)
