"""Refusals in the error shape of the API that was called, for the local adapter's auth checks: an agent
tool reads its own API's errors (Anthropic's ``{"type": "error", "error": {...}}`` on ``/v1/messages``,
OpenAI's ``{"error": {...}}`` on ``/v1/responses``), where a bare text 401 reads as a broken server."""

from __future__ import annotations

from aiohttp import web


def agent_refusal(path: str, message: str) -> web.Response | None:
    """A 401 shaped for the agent API at ``path``, or None for every other route (kept as they were)."""
    if path.startswith("/v1/messages"):
        body = {"type": "error", "error": {"type": "authentication_error", "message": message}}
        return web.json_response(body, status=401)
    if path.startswith("/v1/responses"):
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        return web.json_response({"error": error}, status=401)
    return None
