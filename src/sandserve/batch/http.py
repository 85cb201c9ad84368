"""Sending one batch request over aiohttp: retries, and the line between a final answer and no answer yet.

Final (a result line): a 2xx with a JSON body, and a 4xx that the server gave for the request itself, with
an error body (a bad schema, too long a prompt...): sending it again would get the same answer. Not final
(no line: the next run sends it again): connection refused or reset, timeouts, 408/429/5xx after every
retry, a 2xx whose body is not JSON, a 4xx without an error body (a proxy's page, not the server's word).
401/403 stop the run at once: the endpoint no longer accepts our credentials (a signed URL expired).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from sandserve.batch.types import (
    DEFAULT_CONNECT_TIMEOUT_S,
    SUPPORTED_URLS,
    Backoff,
    BatchRequest,
    BatchResult,
    ResultError,
    dumps,
    loads,
)
from sandserve.client.transport import server_message
from sandserve.client.usage import usage_of
from sandserve.endpoint import Endpoint
from sandserve.engines.base import NATIVE_GENERATE_ROUTE
from sandserve.engines.priority import (
    BATCH_PRIORITY,
    PRIORITY_FIELD,
    Priority,
    request_fields,
    request_headers,
)
from sandserve.errors import EndpointUnavailableError

#: Status codes that mean "try again later"; other 4xx with an error body are the request's own fault.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A run stops when no connection at all could be made for this long (the endpoint is gone).
UNREACHABLE_GIVE_UP_S = 10.0
#: The endpoint refuses us, not the request: stop the run.
REFUSED_STATUSES = frozenset({401, 403, 407})


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str
    final: bool
    """The server's own answer for this request (a 4xx with an error body): written as an error line."""
    status_code: int | None = None
    body: Any = None
    request_id: str = ""
    retry_after: float | None = None
    unreachable: bool = False
    """No connection could be made at all (as opposed to a connection that broke)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    request_id: str
    body: Any


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A request that got no final answer in this run; nothing is written for it."""

    custom_id: str
    reason: str
    attempts: int


class Watcher:
    """What every request sees of the endpoint: whether a connection could be made lately."""

    def __init__(self) -> None:
        self.unreachable_since: float | None = None

    def saw_answer(self) -> None:
        self.unreachable_since = None

    def saw_unreachable(self) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.monotonic()


def json_session(
    endpoint: Endpoint, *, connections: int, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    headers = {"Content-Type": "application/json", **endpoint.request_headers()}
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout)


async def preflight(endpoint: Endpoint, *, max_retries: int, backoff: Backoff) -> None:
    """Fail fast, before the output file is touched, if the endpoint is down or refuses our credentials."""
    timeout = aiohttp.ClientTimeout(total=DEFAULT_CONNECT_TIMEOUT_S)
    async with json_session(endpoint, connections=1, timeout=timeout) as session:
        problem = ""
        for retry_number in range(min(max_retries, 2) + 1):
            if retry_number:
                await asyncio.sleep(backoff.delay(retry_number - 1))
            try:
                async with session.get(f"{endpoint.url}/v1/models") as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = f"no connection ({describe(error)})"
                continue
            if status in REFUSED_STATUSES:
                raise EndpointUnavailableError(endpoint.url, f"it refused our credentials (HTTP {status})")
            return
        raise EndpointUnavailableError(endpoint.url, problem)


class Client:
    """Sends one request until it has a final answer or runs out of retries."""

    def __init__(
        self,
        endpoint: Endpoint,
        session: aiohttp.ClientSession,
        watcher: Watcher,
        *,
        max_retries: int,
        backoff: Backoff,
        on_retry: Any,
        priority: Priority = BATCH_PRIORITY,
    ) -> None:
        self._endpoint = endpoint
        self._priority_fields = request_fields(priority)
        self._priority_headers = request_headers(priority)
        self._session = session
        self._watcher = watcher
        self._max_retries = max_retries
        self._backoff = backoff
        self._on_retry = on_retry
        self._urls = {url: f"{endpoint.url}{url}" for url in SUPPORTED_URLS}

    async def send(self, request: BatchRequest) -> BatchResult | Unfinished:
        started = time.monotonic()
        url = self._urls[request.url]
        payload = self._payload(request)
        attempts = 0
        while True:
            attempts += 1
            outcome = await self._attempt(url, payload)
            if isinstance(outcome, Answer):
                return BatchResult(
                    custom_id=request.custom_id,
                    status_code=outcome.status_code,
                    request_id=outcome.request_id,
                    body=outcome.body,
                    usage=usage_of(outcome.body),
                    attempts=attempts,
                    latency_s=time.monotonic() - started,
                )
            if outcome.final:
                return BatchResult(
                    custom_id=request.custom_id,
                    status_code=outcome.status_code,
                    request_id=outcome.request_id,
                    body=outcome.body,
                    error=ResultError(outcome.code, outcome.message),
                    attempts=attempts,
                    latency_s=time.monotonic() - started,
                )
            if outcome.status_code in REFUSED_STATUSES:
                raise EndpointUnavailableError(
                    self._endpoint.url, f"it refused our credentials (HTTP {outcome.status_code})"
                )
            if attempts > self._max_retries:
                break
            self._stop_if_gone(outcome)
            self._on_retry()
            await asyncio.sleep(self._backoff.delay(attempts - 1, outcome.retry_after))
        since = self._watcher.unreachable_since
        if outcome.unreachable and since is not None and since <= started:
            raise EndpointUnavailableError(
                self._endpoint.url,
                f"no connection for {time.monotonic() - since:.0f} s, {attempts} attempts "
                f"({outcome.message})",
            )
        return Unfinished(request.custom_id, f"{outcome.code}: {outcome.message}", attempts)

    def _stop_if_gone(self, outcome: Failure) -> None:
        """Stop the whole run once no connection could be made for UNREACHABLE_GIVE_UP_S, whatever each
        request's own retries say: a dead endpoint ends the run in seconds, not after every retry cycle."""
        since = self._watcher.unreachable_since
        if outcome.unreachable and since is not None and time.monotonic() - since >= UNREACHABLE_GIVE_UP_S:
            raise EndpointUnavailableError(
                self._endpoint.url,
                f"no connection for {time.monotonic() - since:.0f} s ({outcome.message})",
            )

    def _payload(self, request: BatchRequest) -> bytes:
        body = request.body
        if request.url != NATIVE_GENERATE_ROUTE and "model" not in body and self._endpoint.model:
            body = {**body, "model": self._endpoint.model}
        if PRIORITY_FIELD not in body:  # a request that names its own priority keeps it
            body = {**body, **self._priority_fields}
        return dumps(body)

    async def _attempt(self, url: str, payload: bytes) -> Answer | Failure:
        try:
            async with self._session.post(url, data=payload, headers=self._priority_headers) as response:
                raw = await response.read()
                status = response.status
                request_id = response.headers.get("x-request-id", "")
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as error:
            self._watcher.saw_unreachable()
            return Failure(type(error).__name__, describe(error), final=False, unreachable=True)
        except (aiohttp.ClientError, TimeoutError) as error:
            return Failure(type(error).__name__, describe(error) or "timed out", final=False)
        self._watcher.saw_answer()
        if 200 <= status < 300:
            return _answer(status, request_id, raw)
        body = _json_or_text(raw)
        final = 400 <= status < 500 and status not in RETRYABLE_STATUSES | REFUSED_STATUSES
        return Failure(
            f"http_{status}",
            server_message(body, f"HTTP {status} with an empty body"),
            final=final and is_error_body(body),
            status_code=status,
            body=body,
            request_id=request_id,
            retry_after=parse_retry_after(retry_after),
        )


def is_error_body(body: Any) -> bool:
    """An OpenAI ({"error": ...}), SGLang ({"object": "error", "message"}) or FastAPI ({"detail"}) error
    body."""
    return isinstance(body, dict) and any(body.get(key) for key in ("error", "message", "detail"))


def _answer(status: int, request_id: str, raw: bytes) -> Answer | Failure:
    try:
        body = loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, (dict, list)):
        text = raw[:500].decode(errors="replace")
        message = f"HTTP {status} with a body that is not a JSON object: {text!r}"
        return Failure("malformed_response", message, final=False, status_code=status, request_id=request_id)
    if not request_id and isinstance(body, dict) and isinstance(body.get("id"), str):
        request_id = body["id"]
    return Answer(status, request_id, body)


def _json_or_text(raw: bytes) -> Any:
    try:
        return loads(raw)
    except ValueError:
        return raw[:2000].decode(errors="replace")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
