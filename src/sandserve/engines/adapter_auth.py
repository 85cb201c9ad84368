"""The adapter's auth: the endpoint's token in the header its provider names, the API key as SGLang's
``--api-key`` takes it (health routes stay open), the inside key standing in for the token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandserve.engines.agent_refusals import refusal
from sandserve.engines.auth_errors import auth_error_body

OPEN_ROUTES = frozenset({"/health", "/health_generate"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(
    access_token: str | None, token_header: str | None, api_key: str | None, inside_key: str | None
) -> Any:
    """The token in ``token_header`` (or, from code beside the server, the inside key as a Bearer key), then
    the API key as a Bearer key; each missing or wrong one refused in the shape of the API called."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        from_inside = inside_key is not None and _same(bearer, inside_key)
        token = request.headers.get(token_header) if token_header else None
        if access_token and token_header and not from_inside and not _same(token, access_token):
            return refusal(
                request.path, auth_error_body("token", sent=bool(token), token_header=token_header)
            )
        if api_key and request.path not in OPEN_ROUTES and not _same(bearer, api_key):
            return refusal(request.path, auth_error_body("key", sent=bool(bearer)))
        return await handler(request)

    return middleware


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
