"""Auth refusals in the error shape of the API that was called. The adapter's 401s are OpenAI-shaped
(``auth_errors.py``), which is also the Responses API's shape; an agent tool on Anthropic Messages reads
Anthropic's (``{"type": "error", "error": {"type": "authentication_error", "message"}}``), where an
OpenAI-shaped body reads as a broken server."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def refusal(path: str, openai_body: dict[str, Any]) -> web.Response:
    """The 401 for ``path``: ``openai_body`` as it is, or its message in Anthropic's shape on /v1/messages."""
    if path.startswith("/v1/messages"):
        message = openai_body["error"]["message"]
        body = {"type": "error", "error": {"type": "authentication_error", "message": message}}
        return web.json_response(body, status=401)
    return web.json_response(openai_body, status=401)
