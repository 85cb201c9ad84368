"""The Daytona stand-in's HTTP plumbing: its error type, JSON bodies and the service's error envelopes."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web
from daytona_toolbox_api_client import ErrorResponse

ORGANIZATION_ID = "standin-org"
# Codes the API puts in its error envelope, by status (apps/api/src/common/errors/api-error-code.enum.ts).
_API_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT"}
_DAEMON_CODES = {**_API_CODES, 408: "REQUEST_TIMEOUT", 410: "GONE"}


class StandinError(Exception):
    """An error answer: becomes the service's JSON error envelope (see `_error_middleware`)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _plus_minutes(stamp: str, minutes: int) -> str:
    from datetime import timedelta

    return (datetime.fromisoformat(stamp) + timedelta(minutes=minutes)).isoformat()


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except json.JSONDecodeError as e:
        raise StandinError(400, f"invalid JSON body: {e}") from e


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_to_jsonable(v) for v in value]
    return value.to_dict() if hasattr(value, "to_dict") else value


def _json(value: Any, status: int = 200) -> web.Response:
    def default(obj: object) -> str:
        if isinstance(obj, datetime):
            return obj.isoformat()
        raise TypeError(f"not JSON serializable: {obj!r}")

    return web.Response(
        text=json.dumps(_to_jsonable(value), default=default), status=status, content_type="application/json"
    )


def _error_response(
    request: web.Request, status: int, message: str | list[str], code: str | None
) -> web.Response:
    """The API's error envelope (all-exceptions.filter.ts) or, under /toolbox, the daemon's ErrorResponse."""
    if request.path.startswith("/toolbox/"):
        body: Any = ErrorResponse(
            code=code or _DAEMON_CODES.get(status, "INTERNAL_SERVER_ERROR"),
            message=message if isinstance(message, str) else "; ".join(message),
            method=request.method,
            path=request.path,
            source="DAYTONA_DAEMON",
            status_code=status,
            timestamp=_now(),
        )
    else:
        body = {
            "statusCode": status,
            "source": "DAYTONA_API",
            "code": code or _API_CODES.get(status, "INTERNAL_SERVER_ERROR"),
            "message": message,
            "error": HTTPStatus(status).phrase,
            "path": request.path_qs,
            "timestamp": _now(),
            "method": request.method,
        }
    return _json(body, status=status)


def _proxy_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=f"{message}\n")


def _port(request: web.Request) -> int:
    text = request.match_info["port"]
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise StandinError(400, f"Invalid port {text}")
    return int(text)
