"""What an endpoint is doing now, read from the server's own load sources, as one typed record.

Sources (every one optional; whatever answers is merged, the most direct first):
- SGLang's ``GET /v1/loads`` (JSON, one entry per data-parallel rank: ``num_running_reqs``,
  ``num_waiting_reqs``, ``num_used_tokens``, ``max_total_num_tokens``, ``token_usage``, ``cache_hit_rate``,
  ``gen_throughput``, ``utilization``; shape read from SGLang's ``entrypoints/v1_loads.py``);
- llama.cpp's ``GET /slots`` (one entry per slot: ``is_processing``, ``n_ctx``, ``n_prompt_tokens``,
  ``next_token[0].n_decoded``);
- ``GET /metrics`` in either dialect (``sglang:num_running_reqs`` ... / ``llamacpp:requests_processing`` ...),
  which also carries the cumulative token and request counters that rates are computed from.

The routes an endpoint lacks (404) are remembered per URL and not asked again. Every probe carries the
endpoint's auth headers and its provider's probe headers (Daytona's skip-activity header), so watching an
endpoint through Daytona's preview proxy does not keep its sandbox from auto-stopping.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp

from sandserve.client.transport import error_for_status, server_message, utf8_text
from sandserve.endpoint import Endpoint
from sandserve.engines import load_parser, load_routes, metric_names, metrics_routes
from sandserve.engines.load_formats import LoadFields
from sandserve.masking import MASK, mask_secrets
from sandserve.observe.prometheus import Sample, mean, parse_metrics, total

#: Every engine's load routes, the most direct first (SGLang's /v1/loads, llama.cpp's /slots), then /metrics.
ROUTES = load_routes()
METRICS_ROUTES = frozenset(metrics_routes())
#: Statuses that mean "this server has no such route" (llama.cpp answers 501 for /slots under --no-slots).
_ABSENT = {404, 405, 501}

# One field, the metric names that carry it in each engine's dialect (first present wins).
_RUNNING = metric_names("running")
_QUEUED = metric_names("queued")
_TOKEN_USAGE = metric_names("token_usage")
_CACHE_HIT_RATE = metric_names("cache_hit_rate")
_GEN_THROUGHPUT = metric_names("gen_throughput")
_CAPACITY = metric_names("capacity")
_GENERATED = metric_names("generated")
_CACHED = metric_names("cached")
_REQUESTS = metric_names("requests")
#: SGLang counts every prompt token; llama.cpp counts only the uncached ones (the cached are a counter apart).
_PROMPT_ALL = metric_names("prompt_all")
_PROMPT_UNCACHED = metric_names("prompt_uncached")


@dataclass(frozen=True)
class LoadCounters:
    """Cumulative counters since the server started; rates come from two readings."""

    prompt_tokens: float | None = None
    """Every prompt token, cached ones included."""
    generation_tokens: float | None = None
    cached_tokens: float | None = None
    requests: float | None = None


@dataclass
class EndpointLoad:
    """One reading of one endpoint's load. A field the server does not report is None, never a made-up 0."""

    endpoint_id: str
    url: str
    at: float
    """Unix time of the reading."""
    monotonic: float
    """``time.monotonic()`` of the reading (for rates)."""
    ok: bool = False
    error: str | None = None
    running: int | None = None
    queued: int | None = None
    token_usage: float | None = None
    """Share (0-1) of the KV/token pool held by requests."""
    used_tokens: int | None = None
    capacity_tokens: int | None = None
    cache_hit_rate: float | None = None
    """The server's own recent prefix-cache hit rate (SGLang), else cached / prompt tokens since start."""
    gen_throughput: float | None = None
    """Generation tokens/s as the server itself reports it (SGLang), when it does."""
    counters: LoadCounters = field(default_factory=LoadCounters)
    sources: tuple[str, ...] = ()
    """The routes that answered."""
    probe_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadRates:
    """Rates between two readings of one endpoint; None where a counter is missing or went backwards."""

    seconds: float
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    requests_per_s: float | None
    cache_hit_rate: float | None
    """Cached / prompt tokens over the interval (None with no prompt tokens in it)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


def endpoint_secrets(endpoint: Endpoint) -> set[str]:
    """What must not reach a screen or a report: the credentials it sends, and a signed URL (the URL is the
    key)."""
    credentials = {*_CREDENTIAL_HEADERS, (endpoint.token_header or "").lower()}
    secrets = {value for name, value in endpoint.headers.items() if value and name.lower() in credentials}
    if endpoint.api_key:
        secrets.add(endpoint.api_key)
    if endpoint.auth == "signed":
        secrets.add(endpoint.url)
    return secrets


def rates(before: EndpointLoad, after: EndpointLoad) -> LoadRates:
    seconds = after.monotonic - before.monotonic

    def delta(name: str) -> float | None:
        a, b = getattr(before.counters, name), getattr(after.counters, name)
        if a is None or b is None or b < a or seconds <= 0:
            return None
        return float(b - a)

    def per_second(name: str) -> float | None:
        d = delta(name)
        return None if d is None else d / seconds

    prompt, cached = delta("prompt_tokens"), delta("cached_tokens")
    hit_rate = cached / prompt if prompt and cached is not None else None
    return LoadRates(
        seconds=seconds,
        prompt_tokens_per_s=per_second("prompt_tokens"),
        generation_tokens_per_s=per_second("generation_tokens"),
        requests_per_s=per_second("requests"),
        cache_hit_rate=hit_rate,
    )


# --- reading the sources ---------------------------------------------------------------------------------


def _int(value: float | None) -> int | None:
    return None if value is None or not math.isfinite(value) else round(value)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def parse_prometheus(samples: dict[str, list[Sample]]) -> tuple[LoadFields, LoadCounters]:
    uncached = total(samples, *_PROMPT_UNCACHED)
    cached = total(samples, *_CACHED)
    prompt = total(samples, *_PROMPT_ALL)
    if prompt is None and uncached is not None:
        prompt = uncached + (cached or 0.0)
    counters = LoadCounters(
        prompt_tokens=prompt,
        generation_tokens=total(samples, *_GENERATED),
        cached_tokens=cached,
        requests=total(samples, *_REQUESTS),
    )
    parsed = LoadFields(
        running=total(samples, *_RUNNING),
        queued=total(samples, *_QUEUED),
        token_usage=mean(samples, *_TOKEN_USAGE),
        capacity_tokens=total(samples, *_CAPACITY),
        cache_hit_rate=mean(samples, *_CACHE_HIT_RATE),
        gen_throughput=total(samples, *_GEN_THROUGHPUT),
    )
    return parsed, counters


def merge(
    reading: EndpointLoad, parts: Iterable[LoadFields], counters: LoadCounters = LoadCounters()
) -> EndpointLoad:
    """Fill ``reading`` from the parsed sources, the earlier ones winning."""
    parts = list(parts)

    def pick(name: str) -> Any:
        return _first(*(getattr(part, name) for part in parts))

    reading.running = _int(pick("running"))
    reading.queued = _int(pick("queued"))
    reading.used_tokens = _int(pick("used_tokens"))
    reading.capacity_tokens = _int(pick("capacity_tokens"))
    usage = pick("token_usage")
    if usage is None and reading.used_tokens is not None and reading.capacity_tokens:
        usage = reading.used_tokens / reading.capacity_tokens
    reading.token_usage = usage
    hit_rate = pick("cache_hit_rate")
    if hit_rate is None and counters.prompt_tokens and counters.cached_tokens is not None:
        hit_rate = counters.cached_tokens / counters.prompt_tokens
    reading.cache_hit_rate = hit_rate
    reading.gen_throughput = pick("gen_throughput")
    reading.counters = counters
    return reading


def combine(loads: Sequence[EndpointLoad], *, endpoint_id: str, url: str) -> EndpointLoad:
    """Several endpoints' readings as one (a fleet's workers seen as the fleet): counts and counters add up,
    usage is the pooled share; a field none of them reports stays None."""
    ok = [load for load in loads if load.ok]
    first = min((load.monotonic for load in loads), default=time.monotonic())
    reading = EndpointLoad(endpoint_id=endpoint_id, url=url, at=time.time(), monotonic=first, ok=bool(ok))
    errors = [load.error for load in loads if load.error]
    reading.error = errors[0] if errors else None

    def add(values: Iterable[float | int | None]) -> float | None:
        present = [v for v in values if v is not None]
        return float(sum(present)) if present else None

    reading.running = _int(add(load.running for load in ok))
    reading.queued = _int(add(load.queued for load in ok))
    reading.used_tokens = _int(add(load.used_tokens for load in ok))
    reading.capacity_tokens = _int(add(load.capacity_tokens for load in ok))
    if reading.used_tokens is not None and reading.capacity_tokens:
        reading.token_usage = reading.used_tokens / reading.capacity_tokens
    else:
        usages = [load.token_usage for load in ok if load.token_usage is not None]
        reading.token_usage = sum(usages) / len(usages) if usages else None
    reading.gen_throughput = add(load.gen_throughput for load in ok)
    reading.counters = LoadCounters(
        prompt_tokens=add(load.counters.prompt_tokens for load in ok),
        generation_tokens=add(load.counters.generation_tokens for load in ok),
        cached_tokens=add(load.counters.cached_tokens for load in ok),
        requests=add(load.counters.requests for load in ok),
    )
    counters = reading.counters
    if counters.prompt_tokens and counters.cached_tokens is not None:
        reading.cache_hit_rate = counters.cached_tokens / counters.prompt_tokens
    reading.sources = tuple(sorted({source for load in ok for source in load.sources}))
    reading.probe_ms = max((load.probe_ms for load in loads), default=0.0)
    return reading


class _RouteFailed(Exception):
    def __init__(self, message: str, *, absent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.absent = absent


class LoadProbe:
    """Reads endpoints' loads over one aiohttp session; remembers the routes each URL lacks.

    ``async with LoadProbe() as probe: load = await probe.read(endpoint)``. Never raises for a server's
    failure: the reading says ``ok=False`` and why.
    """

    def __init__(self, *, timeout: float = 5.0, session: aiohttp.ClientSession | None = None) -> None:
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None
        self._absent: dict[str, set[str]] = {}

    async def __aenter__(self) -> LoadProbe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._owns_session = True
        return self._session

    async def _get(self, endpoint: Endpoint, route: str) -> Any:
        headers = endpoint.probe_request_headers()
        try:
            async with self._client().get(endpoint.url + route, headers=headers) as response:
                raw = await response.read()
                if response.status in _ABSENT:
                    raise _RouteFailed(f"{route}: {response.status}", absent=True)
                if response.status >= 400:
                    error = error_for_status(endpoint.url, response.status, server_message(raw))
                    raise _RouteFailed(error.message)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _RouteFailed(f"no answer from {endpoint.url} ({type(exc).__name__}: {exc})") from exc
        try:
            text = utf8_text(raw, route)
        except ValueError as exc:
            raise _RouteFailed(str(exc)) from None
        if route in METRICS_ROUTES:
            return parse_metrics(text)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise _RouteFailed(f"{route} answered something that is not JSON: {text[:120]!r}") from exc

    async def read(self, endpoint: Endpoint) -> EndpointLoad:
        started = time.monotonic()
        url = MASK if endpoint.auth == "signed" else endpoint.url
        reading = EndpointLoad(endpoint_id=endpoint.id, url=url, at=time.time(), monotonic=started)
        absent = self._absent.setdefault(endpoint.url, set())
        routes = [route for route in ROUTES if route not in absent]
        answers = await asyncio.gather(*(self._get(endpoint, r) for r in routes), return_exceptions=True)
        parts: dict[str, LoadFields] = {}
        counters = LoadCounters()
        errors: list[str] = []
        for route, answer in zip(routes, answers, strict=True):
            if isinstance(answer, _RouteFailed):
                if answer.absent:
                    absent.add(route)
                else:
                    errors.append(answer.message)
                continue
            if isinstance(answer, BaseException):
                raise answer
            parse = load_parser(route)
            if parse is not None:
                parts[route] = parse(answer)
            else:
                parts[route], counters = parse_prometheus(answer)
        reading.sources = tuple(route for route in ROUTES if route in parts)
        reading.ok = bool(parts)
        if errors:
            reading.error = mask_secrets(errors[0], endpoint_secrets(endpoint))
        elif not parts:
            reading.error = "the server answers none of " + ", ".join(ROUTES) + " (start it with metrics on)"
        decoding = next((part.decoding_tokens for part in parts.values() if part.decoding_tokens), None)
        if decoding and counters.generation_tokens is not None:
            # llama.cpp adds a request's tokens to its counter when the request ends; with the running ones'
            # tokens so far, the counter moves while requests run and rates are not 0 until they finish.
            counters = replace(counters, generation_tokens=counters.generation_tokens + decoding)
        merge(reading, (parts[r] for r in ROUTES if r in parts), counters)
        reading.probe_ms = (time.monotonic() - started) * 1000
        return reading

    async def read_many(self, endpoints: Sequence[Endpoint]) -> list[EndpointLoad]:
        return list(await asyncio.gather(*(self.read(e) for e in endpoints)))


def read_loads(endpoints: Sequence[Endpoint], *, timeout: float = 5.0) -> list[EndpointLoad]:
    """One reading of each endpoint (a blocking call, for scripts and threads without an event loop)."""

    async def run() -> list[EndpointLoad]:
        async with LoadProbe(timeout=timeout) as probe:
            return await probe.read_many(endpoints)

    return asyncio.run(run())
