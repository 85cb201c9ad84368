"""Serving-benchmark metrics, computed from recorded timestamps, as SGLang's and vLLM's benchmarks define
them.

Per request (all in seconds, from ``time.perf_counter()`` readings):
- TTFT: first content chunk - request sent (both benchmarks: the first chunk that carries text; a chunk with
  reasoning text counts, as in vLLM's chat backend).
- ITL: the gaps between successive content chunks (both: a chunk that carries several tokens is one gap).
- TPOT: (E2E - TTFT) / (output tokens - 1), for requests with more than one output token (both).
- E2E: last byte of the stream - request sent (SGLang "E2E latency", vLLM "E2EL").
Per level:
- duration: first request sent -> last request finished (both);
- request, input, output and total token throughput over that duration, completed requests only (both);
- output tokens come from the server's ``usage`` (stream_options.include_usage), never from a tokenizer on
  this side. vLLM counts the server's usage too when it is given; SGLang's OpenAI-backend path retokenises
  the text it received, which can differ by a few tokens;
- goodput: completed requests that met every SLO given (TTFT, TPOT, E2E, each "<=") per second: vLLM's
  ``--goodput ttft:.. tpot:.. e2el:..`` definition, SGLang 0.5.23's ``ttft/tpot/e2el`` keys. SLO attainment is
  the share of SENT requests that met them (a failed request misses every SLO);
- concurrency: the sum of E2E over the duration (SGLang's "Concurrency": mean requests in flight);
- percentiles: numpy's linear interpolation (both), mean, median, p90, p99 (vLLM's default is p99 alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sandserve.errors import ConfigError

PERCENTILES = (50, 90, 99)
SLO_KEYS = {"ttft": "ttft", "tpot": "tpot", "e2e": "e2e", "e2el": "e2e"}


@dataclass
class RequestRecord:
    """What one request did, as timestamps and the server's token counts."""

    index: int
    sent_at: float
    chunk_times: list[float] = field(default_factory=list)
    """When each chunk that carried text arrived."""
    done_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    ok: bool = False
    error: str | None = None
    resent: int = 0
    """Times it was sent again after its pooled connection proved closed before any answer."""
    connection_lost: bool = False
    """It failed on the connection itself (refused, dropped mid-answer), not with an answer: the benchmark
    then asks whether the server is still there."""

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.sent_at if self.ok and self.chunk_times else None

    @property
    def e2e(self) -> float | None:
        return self.done_at - self.sent_at if self.ok and self.done_at is not None else None

    @property
    def itl(self) -> list[float]:
        if not self.ok:
            return []
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:], strict=False)]

    @property
    def tpot(self) -> float | None:
        ttft, e2e, n = self.ttft, self.e2e, self.completion_tokens
        if ttft is None or e2e is None or n is None or n <= 1:
            return None
        return (e2e - ttft) / (n - 1)


@dataclass(frozen=True)
class Slo:
    """Service-level objectives in seconds; None: not constrained."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None

    @property
    def empty(self) -> bool:
        return self.ttft is None and self.tpot is None and self.e2e is None

    def met_by(self, record: RequestRecord) -> bool:
        """Every objective given holds (``<=``). A failed request meets none; a one-token answer has no
        TPOT, so a TPOT objective cannot fail it."""
        if not record.ok or record.ttft is None or record.e2e is None:
            return False
        if self.ttft is not None and record.ttft > self.ttft:
            return False
        if self.e2e is not None and record.e2e > self.e2e:
            return False
        tpot = record.tpot
        return not (self.tpot is not None and tpot is not None and tpot > self.tpot)

    def to_dict(self) -> dict[str, float | None]:
        return {"ttft_ms": _ms(self.ttft), "tpot_ms": _ms(self.tpot), "e2e_ms": _ms(self.e2e)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def parse_slo(text: str | None) -> Slo:
    """``ttft=800,tpot=80,e2e=5000`` (milliseconds; ``:`` also accepted, and vLLM's ``e2el``). None is no
    objective; a text must name at least one, each once, each a positive finite number."""
    if text is None:
        return Slo()
    hint = (
        "Write --slo ttft=800,tpot=80,e2e=5000 (milliseconds; any of the three, each > 0), or leave it out."
    )
    values: dict[str, float] = {}
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        key, sep, raw = part.replace(":", "=").partition("=")
        name = SLO_KEYS.get(key.strip().lower())
        try:
            number = float(raw)
        except ValueError:
            number = -1.0
        if not sep or name is None or not math.isfinite(number) or number <= 0:
            raise ConfigError(f"Cannot read the SLO {part!r}.", hint=hint)
        if name in values:
            raise ConfigError(f"The SLO names {key.strip()} twice ({text!r}).", hint=hint)
        values[name] = number / 1000
    if not values:
        raise ConfigError(f"The SLO {text!r} names no objective.", hint=hint)
    return Slo(**values)


@dataclass(frozen=True)
class Distribution:
    """Milliseconds."""

    mean: float | None
    median: float | None
    p90: float | None
    p99: float | None
    count: int

    @classmethod
    def of(cls, seconds: Iterable[float | None]) -> Distribution:
        values = np.array([v for v in seconds if v is not None], dtype=float) * 1000
        if values.size == 0:
            return cls(None, None, None, None, 0)
        p50, p90, p99 = (float(x) for x in np.percentile(values, PERCENTILES))
        return cls(float(values.mean()), p50, p90, p99, int(values.size))


@dataclass(frozen=True)
class LevelMetrics:
    sent: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    input_token_throughput: float
    output_token_throughput: float
    total_token_throughput: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    concurrency: float
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    good: int | None
    goodput: float | None
    """Requests/s that met every SLO (None when no SLO was given)."""
    slo_attainment: float | None
    errors: dict[str, int]
    resent: int = 0
    """Requests sent again on a new connection (their clocks restarted: they count once)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def level_metrics(records: Sequence[RequestRecord], slo: Slo = Slo()) -> LevelMetrics:
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    if records:
        start = min(r.sent_at for r in records)
        end = max((r.done_at if r.done_at is not None else r.sent_at) for r in records)
        duration = max(end - start, 0.0)
    else:
        duration = 0.0

    def per_second(count: float) -> float:
        return count / duration if duration > 0 else 0.0

    input_tokens = sum(r.prompt_tokens or 0 for r in done)
    output_tokens = sum(r.completion_tokens or 0 for r in done)
    errors: dict[str, int] = {}
    for r in failed:
        key = (r.error or "unknown error")[:120]
        errors[key] = errors.get(key, 0) + 1
    good = None if slo.empty else sum(1 for r in done if slo.met_by(r))
    return LevelMetrics(
        sent=len(records),
        completed=len(done),
        failed=len(failed),
        duration_s=duration,
        request_throughput=per_second(len(done)),
        input_token_throughput=per_second(input_tokens),
        output_token_throughput=per_second(output_tokens),
        total_token_throughput=per_second(input_tokens + output_tokens),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=sum(r.cached_tokens or 0 for r in done),
        concurrency=per_second(sum(r.e2e or 0.0 for r in done)),
        ttft=Distribution.of(r.ttft for r in done),
        tpot=Distribution.of(r.tpot for r in done),
        itl=Distribution.of(gap for r in done for gap in r.itl),
        e2e=Distribution.of(r.e2e for r in done),
        good=good,
        goodput=None if good is None else per_second(good),
        slo_attainment=None if good is None or not records else good / len(records),
        errors=errors,
        resent=sum(1 for r in records if r.resent),
    )
