"""The batch vocabulary: requests, results, progress, the summary, and the retry policy."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sandserve.engines.base import NATIVE_GENERATE_ROUTE
from sandserve.errors import ConfigError
from sandserve.results import TokenUsage

try:
    import orjson

    loads: Callable[[bytes | str], Any] = orjson.loads

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - orjson ships with sglang-router
    import json

    loads = json.loads

    def dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


Order = Literal["input", "prefix"]
ORDERS: tuple[Order, ...] = ("input", "prefix")
SUPPORTED_URLS = ("/v1/chat/completions", "/v1/completions", NATIVE_GENERATE_ROUTE)

DEFAULT_CONCURRENCY = 64
MAX_DEFAULT_CONCURRENCY = 1024
#: SGLang's longest-prefix-match scheduling falls back to first-come-first-served above this many waiting
#: requests, so the default keeps at most this many waiting beyond what the server runs at once.
SGLANG_LPM_WAITING_LIMIT = 128
DEFAULT_MAX_RETRIES = 5
DEFAULT_REQUEST_TIMEOUT_S = 600.0
DEFAULT_CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request: ``body`` is POSTed to ``url``, relative to the endpoint (``/v1/chat/completions``...)."""

    custom_id: str
    body: dict[str, Any]
    url: str = "/v1/chat/completions"

    def __post_init__(self) -> None:
        if self.url not in SUPPORTED_URLS:
            raise ConfigError(
                f"Unsupported batch url {self.url!r} (custom_id {self.custom_id!r}).",
                hint=f"Use one of: {', '.join(SUPPORTED_URLS)}.",
            )


Usage = TokenUsage
NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class ResultError:
    code: str
    """``http_<status>`` (a 4xx the server gave for the request itself) or ``invalid_input``."""
    message: str


@dataclass(slots=True)
class BatchResult:
    """How one request ended, for good. ``error`` is None exactly when it succeeded.

    A failed request keeps the server's answer (``status_code``, ``body``), as the OpenAI output does. A
    request that never got a final answer (the endpoint went away, 5xx after every retry) has no result at
    all: it is sent again by the next run.
    """

    custom_id: str
    status_code: int | None = None
    request_id: str = ""
    body: Any = None
    error: ResultError | None = None
    usage: Usage = NO_USAGE
    attempts: int = 0
    latency_s: float = 0.0
    """From the first attempt's start to the final answer, backoff included."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_output_line(self) -> dict[str, Any]:
        """The OpenAI batch output line."""
        response = None
        if self.status_code is not None:
            response = {"status_code": self.status_code, "request_id": self.request_id, "body": self.body}
        error = None if self.error is None else {"code": self.error.code, "message": self.error.message}
        return {
            "id": f"batch_req_{os.urandom(12).hex()}",
            "custom_id": self.custom_id,
            "response": response,
            "error": error,
        }


@dataclass(frozen=True, slots=True)
class BatchProgress:
    total: int | None
    """Requests in the whole batch (None when the requests come from an iterable of unknown length)."""
    done: int
    """Finished requests, those skipped as finished by an earlier run included."""
    skipped: int
    succeeded: int
    failed: int
    in_flight: int
    retries: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    elapsed_s: float
    unfinished: int = 0
    """Requests that gave up on this run without a final answer (sent again by the next run)."""
    in_flight_limit: int | None = None
    """How many requests the batch keeps in flight now, when it follows the endpoint's load (batch.pace);
    below ``concurrency`` while it makes room for higher-priority requests."""
    concurrency: int | None = None

    @property
    def requests_per_s(self) -> float:
        return rate(self.succeeded + self.failed, self.elapsed_s)

    @property
    def input_tokens_per_s(self) -> float:
        return rate(self.input_tokens, self.elapsed_s)

    @property
    def output_tokens_per_s(self) -> float:
        return rate(self.output_tokens, self.elapsed_s)


@dataclass(frozen=True)
class BatchSummary:
    """What this run did. Requests finished by an earlier run count only in ``skipped``."""

    requests: int
    succeeded: int
    failed: int
    skipped: int
    retries: int
    wall_s: float
    requests_per_s: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    input_tokens_per_s: float
    output_tokens_per_s: float
    cached_share: float
    """cached_tokens / input_tokens: the share of prompt tokens the server found in its prefix cache."""
    latency_p50_s: float | None
    """Latency percentiles of the successful requests (retries included)."""
    latency_p90_s: float | None
    latency_p99_s: float | None
    errors_by_kind: dict[str, int]
    concurrency: int
    order: str
    unfinished: int = 0
    """Requests of the batch that still have no result (the endpoint went away, 5xx after every retry...):
    nothing was written for them, and running the same batch again sends them."""
    stopped_because: str | None = None
    """Why the run stopped before every request had a result; None when it completed."""
    pending_examples: dict[str, str] = dataclasses.field(default_factory=dict)
    """Up to 20 unfinished custom_ids with the last failure each saw."""
    priority: str = "low"
    """The priority every request was sent with."""
    lowest_in_flight: int | None = None
    """When the batch followed the endpoint's load: the fewest requests it kept in flight (None: fixed)."""
    times_yielded: int = 0
    """How many times it lowered its in-flight count because higher-priority requests were waiting."""

    @property
    def complete(self) -> bool:
        return self.unfinished == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before a retry: exponential with full jitter, or what Retry-After asks for."""

    base_s: float = 1.0
    max_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (0 for the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        return random.uniform(0.0, min(self.max_s, self.base_s * 2**retry_number))


ResultSink = Callable[[BatchResult], None]
ProgressCallback = Callable[[BatchProgress], None]


def rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0
