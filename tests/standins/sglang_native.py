"""SGLang's native routes in the stand-in: ``/generate``, ``/metrics`` and ``/v1/loads``."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp import web

from .sglang_priority import given_priority, priority_metrics
from .sglang_state import (
    EOS_ID,
    VERSION,
    BadRequest,
    Handler,
    ServerState,
    error_response,
    json_body,
    sse,
    start_stream,
)
from .sglang_text import babble, constraint_sample, seeded, token_ids, tokenize, truncate

# --- /generate (SGLang's native API) ------------------------------------------------------------------------


def generate_route(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            text, input_ids = body.get("text"), body.get("input_ids")
            if text is None and input_ids is None:
                raise BadRequest("Either text, input_ids or input_embeds should be provided.")
            params = body.get("sampling_params") or {}
            if isinstance(text, list):
                return web.json_response([_native_output(state, item, None, params) for item in text])
            if body.get("stream"):
                output = _native_output(state, text, input_ids, params)
                return await _stream_native(request, output)
            return web.json_response(_native_output(state, text, input_ids, params))
        except (BadRequest, ValueError) as e:
            return web.json_response({"error": {"message": str(e)}}, status=400)

    return handler


def _native_output(state: ServerState, text: str | None, input_ids: list[int] | None, params: dict) -> dict:
    started = time.perf_counter()
    prompt_tokens = tokenize(text) if text is not None else [str(i) for i in input_ids or []]
    kinds = [kind for kind in ("regex", "ebnf", "json_schema") if params.get(kind) is not None]
    if len(kinds) > 1:
        raise ValueError("Only one of regex, json_schema, or ebnf can be set.")
    max_new = int(params.get("max_new_tokens", 128))
    rng = seeded(prompt_tokens, params)
    if kinds:
        kind = "json" if kinds[0] == "json_schema" else kinds[0]
        output = constraint_sample(kind, params[kinds[0]], rng)
    elif params.get("ignore_eos"):
        output = " " + babble(rng, max_new)
    else:
        output = " " + babble(rng, 16)
    output, finish = _finish(output, max_new, params.get("stop"))
    cached = state.cache.match_and_insert(prompt_tokens)
    out_tokens = tokenize(output)
    state.metrics.record(len(prompt_tokens), len(out_tokens), cached)
    return {
        "text": output,
        "output_ids": token_ids(out_tokens),
        "meta_info": {
            "id": uuid.uuid4().hex,
            "finish_reason": finish,
            "prompt_tokens": len(prompt_tokens),
            "weight_version": "default",
            "completion_tokens": len(out_tokens),
            "cached_tokens": cached,
            "reasoning_tokens": 0,
            "e2e_latency": time.perf_counter() - started,
        },
    }


def _finish(output: str, max_new: int, stop: str | list[str] | None) -> tuple[str, dict[str, Any]]:
    for word in [stop] if isinstance(stop, str) else stop or []:
        if word and word in output:
            return output[: output.index(word)], {"type": "stop", "matched": word}
    if len(tokenize(output)) > max_new:
        return truncate(output, max_new), {"type": "length", "length": max_new}
    return output, {"type": "stop", "matched": EOS_ID}


async def _stream_native(request: web.Request, output: dict[str, Any]) -> web.StreamResponse:
    response = await start_stream(request)
    pieces = tokenize(output["text"]) or [""]
    for i in range(1, len(pieces) + 1):
        last = i == len(pieces)
        finish = output["meta_info"]["finish_reason"] if last else None
        meta = {**output["meta_info"], "completion_tokens": i, "finish_reason": finish}
        chunk = {"text": "".join(pieces[:i]), "output_ids": output["output_ids"][:i], "meta_info": meta}
        await response.write(sse(chunk))
        await asyncio.sleep(0)
    await response.write(b"data: [DONE]\n\n")
    return response


def metrics_route(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if not state.config.enable_metrics:
            return web.json_response({"detail": "Not Found"}, status=404)
        m, name = state.metrics, state.config.name
        hit_rate = m.cached_tokens / m.prompt_tokens if m.prompt_tokens else 0.0
        rows = [
            ("counter", "prompt_tokens_total", m.prompt_tokens),
            ("counter", "generation_tokens_total", m.generation_tokens),
            ("counter", "cached_tokens_total", m.cached_tokens),
            ("counter", "num_requests_total", m.requests),
            ("gauge", "num_running_reqs", 0),
            ("gauge", "num_queue_reqs", 0),
            ("gauge", "cache_hit_rate", hit_rate),
            ("gauge", "token_usage", 0.0),
            ("gauge", "gen_throughput", 0.0),
            ("gauge", "max_total_num_tokens", state.config.max_total_num_tokens),
        ]
        if state.scheduler.enabled:
            text = priority_metrics(rows, name, state.scheduler)
            return web.Response(text=text, content_type="text/plain")
        lines = []
        for kind, metric, value in rows:
            lines += [f"# HELP sglang:{metric} {metric}.", f"# TYPE sglang:{metric} {kind}"]
            lines.append(f'sglang:{metric}{{model_name="{name}"}} {float(value)}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    return handler


# --- /v1/loads (SGLang's entrypoints/v1_loads.py: one entry per DP rank, None fields and timestamp dropped,
# num_total_reqs added, then an aggregate) ----------------------------------------------------------------

_GENERATION_PATHS = ("/generate", "/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses")


def in_flight_middleware(state: ServerState, in_flight: dict[int, int]) -> Any:
    """Keeps ``in_flight`` (request -> prompt tokens) for the requests being generated: what the scheduler
    would hold. At most ``max_running_requests`` run at once, each for ``decode_seconds``; the rest wait, in
    the scheduler's order (``sglang_priority``)."""
    scheduler = state.scheduler

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in _GENERATION_PATHS:
            return await handler(request)
        body = await request.read()  # aiohttp keeps it for the handler
        given = given_priority(body)
        if isinstance(given, str):  # not an integer: the route's own validation answers 400
            return await handler(request)
        key = id(request)
        in_flight[key] = len(tokenize(body.decode(errors="replace")))

        async def generate() -> web.StreamResponse:
            if state.decode_seconds:
                await asyncio.sleep(state.decode_seconds)
            return await handler(request)

        try:
            return await scheduler.run(given, generate)
        finally:
            in_flight.pop(key, None)

    return middleware


def v1_loads_route(state: ServerState, in_flight_table: dict[int, int]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        include = request.query.get("include")
        sections = {s.strip() for s in include.split(",")} if include else {"all"}
        valid = {"core", "memory", "spec", "lora", "disagg", "queues", "all"}
        if sections - valid:
            message = f"Invalid include sections: {sections - valid}. Valid options: {sorted(valid)}"
            return error_response(message, kind="Bad Request")
        config = state.config
        in_flight = list(in_flight_table.values())
        running = min(len(in_flight), config.running_requests)
        waiting = len(in_flight) - running
        used = sum(in_flight[:running])
        m = state.metrics
        load: dict[str, Any] = {
            "dp_rank": 0,
            "num_running_reqs": running,
            "num_waiting_reqs": waiting,
            "num_used_tokens": used,
            "num_total_tokens": sum(in_flight),
            "max_total_num_tokens": config.max_total_num_tokens,
            "token_usage": round(used / config.max_total_num_tokens, 4),
            "gen_throughput": 0.0,
            "cache_hit_rate": round(m.cached_tokens / m.prompt_tokens, 4) if m.prompt_tokens else 0.0,
            "utilization": round(running / config.running_requests, 4),
            "max_running_requests": config.running_requests,
        }
        if sections & {"memory", "all"}:
            capacity = config.max_total_num_tokens
            load["memory"] = {
                "weight_gb": 12.81,
                "kv_cache_gb": 27.94,
                "graph_gb": 0.6,
                "token_capacity": capacity,
            }
        if sections & {"queues", "all"}:
            load["queues"] = {"waiting": waiting, "grammar": 0, "paused": 0, "retracted": 0}
        load["num_total_reqs"] = running + waiting
        loads = [load]
        if request.query.get("format") == "prometheus":
            lines = []
            for key, value in load.items():
                if isinstance(value, (int, float)) and key not in ("dp_rank", "num_total_reqs"):
                    lines += [f"# TYPE sglang_{key} gauge", f'sglang_{key}{{dp_rank="0"}} {value}']
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
        aggregate = {
            "total_running_reqs": running,
            "total_waiting_reqs": waiting,
            "total_reqs": running + waiting,
            "avg_token_usage": load["token_usage"],
            "avg_throughput": load["gen_throughput"],
            "avg_utilization": load["utilization"],
        }
        return web.json_response(
            {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "version": VERSION,
                "dp_rank_count": len(loads),
                "loads": loads,
                "aggregate": aggregate,
            }
        )

    return handler
