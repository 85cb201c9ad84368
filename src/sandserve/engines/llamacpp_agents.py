"""What the local adapter changes on llama-server's agent routes (``/v1/responses``, ``/v1/messages``): the
rest of both passes through as llama-server answers it (both are the APIs' own shapes already).

llama-server turns a Responses request into a chat completion by copying its fields and renaming a few
(``tools/server/server-chat.cpp::server_chat_convert_responses_to_chatcmpl``), but it has no mapping for the
Responses API's structured output, ``text.format``: a JSON schema there was silently not enforced. Here it
becomes the chat ``response_format`` llama-server enforces with its grammar (and ``enable_thinking: false``,
as for chat: a ``<think>`` block first breaks the JSON grammar's output parser).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def responses_body(raw: bytes) -> bytes:
    """The request with ``text.format`` (json_schema / json_object) as ``response_format``."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(body, dict) or "response_format" in body:
        return raw
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_schema", "json_object"):
        return raw
    body["response_format"] = _response_format(fmt)
    kwargs = body.setdefault("chat_template_kwargs", {})
    if isinstance(kwargs, dict):
        kwargs.setdefault("enable_thinking", False)
    return json.dumps(body).encode()


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    inner = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
    return {"type": "json_schema", "json_schema": inner}


#: Request rewrites by route, applied before the request is passed through.
REQUEST_REWRITES: dict[str, Callable[[bytes], bytes]] = {"/v1/responses": responses_body}
