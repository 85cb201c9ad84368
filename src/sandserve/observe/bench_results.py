"""What a benchmark run measured, level by level: the records, the server's own load joined to each level,
progress while a level runs, and the server going away; what ``bench.json`` holds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sandserve.endpoint import Endpoint
from sandserve.masking import mask_secrets
from sandserve.observe.loads import EndpointLoad, endpoint_secrets
from sandserve.observe.metrics import LevelMetrics, RequestRecord


@dataclass
class LevelLoad:
    """The server's own view during one level (None: the server does not report it)."""

    samples: int = 0
    running_mean: float | None = None
    running_max: int | None = None
    queued_mean: float | None = None
    queued_max: int | None = None
    token_usage_mean: float | None = None
    token_usage_max: float | None = None
    cache_hit_rate: float | None = None
    server_generation_tokens_per_s: float | None = None
    source_errors: list[str] = field(default_factory=list)


@dataclass
class LevelResult:
    mode: str
    value: float
    records: list[RequestRecord] = field(default_factory=list)
    metrics: LevelMetrics | None = None
    load: LevelLoad | None = None
    client_cpu: float | None = None
    """Client CPU seconds / wall seconds (1.0 = one core busy the whole level)."""
    unfinished: int = 0
    interrupted: bool = False
    saturated: bool = False
    unsent: int = 0
    """Requests of this level not sent because the server had gone away."""
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.mode == "rate":
            return "rate=inf" if math.isinf(self.value) else f"rate={self.value:g}/s"
        return f"concurrency={int(self.value)}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "records"}
        data["label"] = self.label
        data["requests"] = [_record_summary(r) for r in self.records]
        return data


def _record_summary(record: RequestRecord) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "index": record.index,
        "ok": record.ok,
        "error": record.error,
        "ttft_ms": ms(record.ttft),
        "tpot_ms": ms(record.tpot),
        "e2e_ms": ms(record.e2e),
        "chunks": len(record.chunk_times),
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        "resent": record.resent,
    }


@dataclass(frozen=True)
class LevelProgress:
    """A level while it runs: what a progress line shows after each finished request."""

    label: str
    done: int
    total: int
    failed: int
    elapsed_s: float
    ttft_p50_ms: float | None
    """Median time to first token of this level's requests so far."""


ProgressCallback = Callable[[LevelProgress], None]


@dataclass(frozen=True)
class ServerGone:
    """The server went away during a level: a request failed on its connection and the server no longer
    answered a plain request either."""

    at: float
    """Unix time it was found gone."""
    level: str
    after_s: float
    """Seconds into that level."""
    reason: str
    """What the check got instead of an answer."""

    def describe(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.at))
        return f"the server went away at {when}, {self.after_s:.1f} s into {self.level} ({self.reason})"


@dataclass
class BenchResult:
    endpoint: dict[str, Any]
    dataset: str
    config: dict[str, Any]
    started_at: float
    finished_at: float | None = None
    levels: list[LevelResult] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    server_gone: ServerGone | None = None
    """Set when the server stopped answering mid-run: the run stopped there."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "dataset": self.dataset,
            "config": self.config,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "interrupted": self.interrupted,
            "server_gone": asdict(self.server_gone) if self.server_gone else None,
            "warnings": self.warnings,
            "levels": [level.to_dict() for level in self.levels],
        }


def public_endpoint(endpoint: Endpoint) -> dict[str, Any]:
    """What a report may say about the endpoint: never its token or key, nor a signed URL."""
    return {
        "id": endpoint.id,
        "url": mask_secrets(endpoint.url, endpoint_secrets(endpoint)),
        "model": endpoint.model,
        "engine": endpoint.engine,
        "provider": endpoint.provider,
        "auth": endpoint.auth,
    }


def join_load(samples: list[EndpointLoad], start: float, end: float) -> LevelLoad:
    """The samples taken while a level ran (gauges), and the counters from its first to its last sample."""
    during = [s for s in samples if s.ok and start <= s.monotonic <= end]
    ok = [s for s in samples if s.ok]
    load = LevelLoad(samples=len(during))
    load.source_errors = sorted({s.error for s in samples if s.error})

    def values(name: str) -> list[float]:
        return [float(v) for v in (getattr(s, name) for s in during) if v is not None]

    running, queued, usage = values("running"), values("queued"), values("token_usage")
    if running:
        load.running_mean, load.running_max = sum(running) / len(running), int(max(running))
    if queued:
        load.queued_mean, load.queued_max = sum(queued) / len(queued), int(max(queued))
    if usage:
        load.token_usage_mean, load.token_usage_max = sum(usage) / len(usage), max(usage)
    if len(ok) >= 2:
        first, last = ok[0], ok[-1]
        a, b = first.counters, last.counters
        prompt = (b.prompt_tokens or 0.0) - (a.prompt_tokens or 0.0)
        if (
            a.prompt_tokens is not None
            and prompt > 0
            and a.cached_tokens is not None
            and b.cached_tokens is not None
        ):
            load.cache_hit_rate = (b.cached_tokens - a.cached_tokens) / prompt
        seconds = last.monotonic - first.monotonic
        if a.generation_tokens is not None and b.generation_tokens is not None and seconds > 0:
            load.server_generation_tokens_per_s = (b.generation_tokens - a.generation_tokens) / seconds
    if load.cache_hit_rate is None:
        rates = values("cache_hit_rate")
        load.cache_hit_rate = sum(rates) / len(rates) if rates else None
    return load
