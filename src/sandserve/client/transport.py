"""Talking to an endpoint over HTTP, with every failure turned into one of the project's errors.

The one translator of HTTP answers (as huggingface_hub's ``hf_raise_for_status`` / openai's
``_make_status_error``): ``error_for_status`` and ``server_message``; the batch runner, which records errors
instead of raising them, reads messages with the same ``server_message``. Whatever the client (the OpenAI SDK,
LiteLLM, raw httpx, aiohttp), the same rules apply:
- no answer, 401/403 (a token or signed URL that expired), 404 from the proxy, 502-504: the endpoint is not
  usable -> ``EndpointUnavailableError`` (its hint names ``sandserve status``);
- another 4xx: the request is wrong (a bad schema, regex or grammar) -> ``RequestRejectedError`` with the
  server's own message;
- 500 and the rest of 5xx: the server failed on a request it accepted -> ``ServerFailedError``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from sandserve.errors import EndpointUnavailableError, RequestRejectedError, SandserveError, ServerFailedError
from sandserve.tls import tls_context

if TYPE_CHECKING:
    import openai

    from sandserve.endpoint import Endpoint

#: Statuses that mean "this endpoint cannot serve you", whatever was asked.
_UNAVAILABLE = {
    401: "it refused the credentials",
    403: "it refused the credentials",
    404: "nothing answers at this address",
    502: "the proxy got no answer from the server",
    503: "the server is not ready",
    504: "the proxy timed out waiting for the server",
}


def raise_for_status(url: str, response: httpx.Response) -> None:
    """Raise the project's error for an httpx answer that is not a success."""
    if not response.is_success:
        raise error_for_status(
            url, response.status_code, server_message(response.text, response.reason_phrase)
        )


def error_for_status(url: str, status: int, message: str) -> SandserveError:
    if status in _UNAVAILABLE:
        reason = _UNAVAILABLE[status]
        if status in (401, 403):
            reason += " (the token may be wrong, or the signed URL expired)"
        return EndpointUnavailableError(url, f"{reason}; the server said {status}: {message}")
    if 400 <= status < 500:
        return RequestRejectedError(status, message)
    return ServerFailedError(status, message)


#: How much of a server's error text an error message carries.
MESSAGE_LIMIT = 500


def utf8_text(raw: bytes, what: str) -> str:
    """``raw`` decoded as UTF-8; a ValueError that names ``what`` and the first bad byte where it is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 4]
        raise ValueError(
            f"{what} answered bytes that are not UTF-8 ({exc.reason} at byte {exc.start}: {bad!r})"
        ) from None


def server_message(body: Any, fallback: str = "") -> str:
    """The human part of an error body, whichever server shaped it: OpenAI's and llama.cpp's
    ``{"error": {"message"}}``, SGLang's ``{"message"}``, FastAPI's ``{"detail"}``, the proxy's text.
    ``fallback`` stands for an empty body; anything else unrecognised is shown as it is, cut short."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            return body.strip()[:MESSAGE_LIMIT] or fallback
        return server_message(parsed, fallback) if isinstance(parsed, dict) else body.strip()[:MESSAGE_LIMIT]
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:MESSAGE_LIMIT]
            if isinstance(value, dict) and value:
                return server_message(value, fallback)
        return json.dumps(body)[:MESSAGE_LIMIT] if body else fallback
    return str(body)[:MESSAGE_LIMIT] if body else fallback


def translate(exc: BaseException, url: str) -> SandserveError | None:
    """The project error for an exception raised by the OpenAI SDK (or LiteLLM, which subclasses it) or
    httpx; None for anything else."""
    if isinstance(exc, SandserveError):
        return exc
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        message = server_message(response.text, response.reason_phrase)
        return error_for_status(url, response.status_code, message)
    if isinstance(exc, httpx.TransportError):
        detail = str(exc) or "connection failed"
        return EndpointUnavailableError(url, f"no answer ({type(exc).__name__}: {detail})")
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a dependency
        return None
    if isinstance(exc, openai.APIStatusError):
        return error_for_status(url, exc.status_code, server_message(exc.body, exc.message))
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return EndpointUnavailableError(url, f"no answer ({type(cause).__name__}: {cause})")
    if isinstance(exc, openai.APIError):
        # An error chunk inside a stream that had already started with HTTP 200 (SGLang's way for a bad
        # grammar).
        code = exc.body.get("code") if isinstance(exc.body, dict) else None
        status = code if isinstance(code, int) else 400
        return error_for_status(url, status, server_message(exc.body, exc.message))
    return None


@contextlib.contextmanager
def endpoint_errors(endpoint: Endpoint) -> Iterator[None]:
    """Re-raise client exceptions met inside the block as the project's errors."""
    try:
        yield
    except Exception as exc:
        translated = translate(exc, endpoint.url)
        if translated is None or translated is exc:
            raise
        raise translated from exc


@contextlib.contextmanager
def openai_client(endpoint: Endpoint, client: openai.OpenAI | None = None) -> Iterator[openai.OpenAI]:
    """The caller's ``client`` as it is, or a new one on ``endpoint``, closed (its pooled connections with it)
    when the block ends: one dropped unclosed keeps a socket open until the garbage collector finds it."""
    if client is not None:
        yield client
        return
    with endpoint.openai() as owned:
        yield owned


def post_json(endpoint: Endpoint, path: str, body: dict[str, Any], *, timeout: float = 120.0) -> Any:
    """POST ``body`` to ``endpoint.url + path`` with the endpoint's auth; the decoded JSON answer."""
    with endpoint_errors(endpoint):
        response = httpx.post(
            endpoint.url + path,
            json=body,
            headers=endpoint.request_headers(),
            timeout=timeout,
            verify=tls_context(),
        )
        response.raise_for_status()
        try:
            return response.json()
        except ValueError as exc:
            raise EndpointUnavailableError(
                endpoint.url, f"{path} answered something that is not JSON: {response.text[:200]!r}"
            ) from exc
