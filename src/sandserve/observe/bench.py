"""The serving benchmark: load levels (a concurrency list, Poisson request rates, or a sweep to saturation)
sent by the streaming client, with the server's own load sampled during each level and joined to it.

``BenchRun.result`` is filled as the run goes, so an interrupted run (Ctrl-C) still has every finished
request of every level: the level under way is closed with what it measured and marked interrupted.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp

from sandserve.endpoint import Endpoint
from sandserve.errors import ConfigError, EndpointUnavailableError
from sandserve.masking import mask_secrets
from sandserve.observe.agent_stream import ROUTES, Api
from sandserve.observe.datasets import BenchPrompt, PromptSource
from sandserve.observe.loads import EndpointLoad, LoadProbe, combine, endpoint_secrets
from sandserve.observe.metrics import LevelMetrics, RequestRecord, Slo, level_metrics
from sandserve.observe.stream import bench_session, stream_chat

Mode = Literal["concurrency", "rate", "sweep"]
#: Above this share of one core the client, not the server, may be what a level measured.
CLIENT_CPU_SATURATED = 0.9


@dataclass(frozen=True)
class LoadPlan:
    mode: Mode
    levels: tuple[float, ...] = ()
    """Concurrencies (concurrency), requests/s (rate; ``inf``: all at once); unused by a sweep."""
    requests_per_level: int | None = None
    """None: 4 x the concurrency, at least 16 (concurrency, sweep); 32 (rate)."""
    max_concurrency: int | None = None
    """Rate mode: at most this many in flight (SGLang's --max-concurrency)."""
    sweep_max: int = 256
    saturation_gain: float = 0.10
    """A sweep stops at the first level that adds less than this share of output tokens/s."""

    def __post_init__(self) -> None:
        if self.mode != "sweep" and not self.levels:
            raise ConfigError(
                "No load levels given.", hint="Pass --concurrency 1,4,16 or --rate 2,8,inf or --sweep."
            )
        for value in self.levels:
            if not value > 0:
                raise ConfigError(
                    f"A load level must be > 0 (got {value}).", hint="For example --concurrency 1,4,16."
                )
            if self.mode == "concurrency" and (math.isinf(value) or value != int(value)):
                raise ConfigError(
                    f"A concurrency must be a whole number (got {value}).", hint="--concurrency 1,4,16"
                )
        if self.requests_per_level is not None and self.requests_per_level < 1:
            raise ConfigError(
                "--requests must be at least 1.", hint="It is the number of requests per level."
            )

    def requests_for(self, value: float) -> int:
        if self.requests_per_level is not None:
            return self.requests_per_level
        if self.mode == "rate":
            return 32
        return max(16, 4 * int(value))

    def sweep_levels(self) -> list[int]:
        levels, c = [], 1
        while c <= self.sweep_max:
            levels.append(c)
            c *= 2
        return levels


@dataclass(frozen=True)
class BenchConfig:
    plan: LoadPlan
    slo: Slo = field(default_factory=Slo)
    warmup: int = 2
    sample_interval_s: float = 0.2
    seed: int = 0
    timeout_s: float = 600.0
    api: Api = "chat"
    """Which API the requests go to: chat completions, the Responses API or Anthropic Messages."""


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "dataset": self.dataset,
            "config": self.config,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "interrupted": self.interrupted,
            "warnings": self.warnings,
            "levels": [level.to_dict() for level in self.levels],
        }


def _public_endpoint(endpoint: Endpoint) -> dict[str, Any]:
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


class BenchRun:
    def __init__(
        self,
        endpoint: Endpoint,
        source: PromptSource,
        config: BenchConfig,
        *,
        load_endpoints: list[Endpoint] | None = None,
    ) -> None:
        """``load_endpoints``: whose load to sample (default: the endpoint itself; for a fleet, its workers,
        whose readings are added up)."""
        self.endpoint = endpoint
        self.load_endpoints = load_endpoints or [endpoint]
        self.source = source
        self.config = config
        route, self._body, self._read = ROUTES[config.api]
        self.url = endpoint.url + route
        plan = config.plan
        self.result = BenchResult(
            endpoint=_public_endpoint(endpoint),
            dataset=source.describe(),
            config={
                "mode": plan.mode,
                "levels": list(plan.levels),
                "requests_per_level": plan.requests_per_level,
                "max_concurrency": plan.max_concurrency,
                "warmup": config.warmup,
                "slo": config.slo.to_dict(),
                "sample_interval_s": config.sample_interval_s,
                "seed": config.seed,
                "api": config.api,
                "load_sampled_from": [e.id for e in self.load_endpoints],
            },
            started_at=time.time(),
        )
        self._rng = random.Random(config.seed)
        self._index = 0

    async def run(self, on_level: Callable[[LevelResult], None] | None = None) -> BenchResult:
        """Every level in turn; ``on_level`` sees each finished level."""
        plan = self.config.plan
        try:
            async with (
                bench_session(self.endpoint, timeout_s=self.config.timeout_s) as session,
                LoadProbe() as probe,
            ):
                await self._warm_up(session)
                if plan.mode == "sweep":
                    await self._sweep(session, probe, on_level)
                else:
                    for value in plan.levels:
                        level = await self._level(session, probe, plan.mode, value)
                        if on_level:
                            on_level(level)
        except asyncio.CancelledError:
            self.result.interrupted = True
            raise
        finally:
            self.result.finished_at = time.time()
        return self.result

    async def _sweep(
        self, session: aiohttp.ClientSession, probe: LoadProbe, on_level: Callable[[LevelResult], None] | None
    ) -> None:
        best = 0.0
        for concurrency in self.config.plan.sweep_levels():
            level = await self._level(session, probe, "concurrency", concurrency)
            throughput = level.metrics.output_token_throughput if level.metrics else 0.0
            failed = level.metrics is None or level.metrics.failed > level.metrics.sent // 2
            if (best and throughput < best * (1 + self.config.plan.saturation_gain)) or failed:
                level.saturated = True
                level.warnings.append(
                    "saturated: this level added less than "
                    f"{self.config.plan.saturation_gain:.0%} output tokens/s over the best before it"
                    if not failed
                    else "stopped: more than half of this level's requests failed"
                )
            if on_level:
                on_level(level)
            if level.saturated:
                return
            best = max(best, throughput)

    async def _warm_up(self, session: aiohttp.ClientSession) -> None:
        count = self.config.warmup
        if count <= 0:
            return
        records = [RequestRecord(index=-1 - i, sent_at=0.0) for i in range(count)]
        prompts = self.source.take(count)
        await asyncio.gather(*(self._send(session, p, r) for p, r in zip(prompts, records, strict=True)))
        if not any(r.ok for r in records):
            reason = mask_secrets(
                next((r.error for r in records if r.error), "no answer"), endpoint_secrets(self.endpoint)
            )
            where = self.result.endpoint["url"]
            raise EndpointUnavailableError(where, f"every warm-up request failed: {reason}")

    async def _send(self, session: aiohttp.ClientSession, prompt: BenchPrompt, record: RequestRecord) -> None:
        body = self._body(self.endpoint.model, prompt.messages, prompt.max_tokens, prompt.extra)
        await stream_chat(session, self.url, body, record, self._read)

    async def _read_load(self, probe: LoadProbe) -> EndpointLoad:
        if self.load_endpoints == [self.endpoint]:
            return await probe.read(self.endpoint)
        loads = await probe.read_many(self.load_endpoints)
        return combine(loads, endpoint_id=self.endpoint.id, url=self.endpoint.url)

    async def _sample(self, probe: LoadProbe, samples: list[EndpointLoad]) -> None:
        while True:
            samples.append(await self._read_load(probe))
            await asyncio.sleep(self.config.sample_interval_s)

    async def _level(
        self, session: aiohttp.ClientSession, probe: LoadProbe, mode: str, value: float
    ) -> LevelResult:
        plan = self.config.plan
        level = LevelResult(mode=mode, value=value)
        self.result.levels.append(level)
        prompts = self.source.take(plan.requests_for(value))
        samples: list[EndpointLoad] = []
        sampler = asyncio.ensure_future(self._sample(probe, samples))
        await asyncio.sleep(0)  # the first sample starts before the first request
        limit = int(value) if mode == "concurrency" else plan.max_concurrency
        gate = asyncio.Semaphore(limit) if limit else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        tasks: list[asyncio.Future[None]] = []

        async def one(prompt: BenchPrompt) -> None:
            record = RequestRecord(index=self._index, sent_at=time.perf_counter())
            self._index += 1
            if gate is None:
                level.records.append(record)
                await self._send(session, prompt, record)
                return
            async with gate:
                level.records.append(record)
                await self._send(session, prompt, record)

        try:
            for prompt in prompts:
                tasks.append(asyncio.ensure_future(one(prompt)))
                if mode == "rate" and not math.isinf(value):
                    await asyncio.sleep(self._rng.expovariate(value))
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            level.interrupted = True
            raise
        finally:
            for task in tasks:
                task.cancel()
            wall = time.perf_counter() - wall0
            level.client_cpu = (time.process_time() - cpu0) / wall if wall > 0 else None
            try:
                samples.append(await asyncio.shield(self._read_load(probe)))
            except (asyncio.CancelledError, Exception):
                pass
            sampler.cancel()
            self._close(level, samples)
        return level

    def _close(self, level: LevelResult, samples: list[EndpointLoad]) -> None:
        finished = [r for r in level.records if r.done_at is not None]
        secrets = endpoint_secrets(self.endpoint)
        for record in finished:
            if record.error:
                record.error = mask_secrets(record.error, secrets)
        level.unfinished = len(level.records) - len(finished)
        level.records = finished
        level.metrics = level_metrics(finished, self.config.slo)
        if finished:
            start = min(r.sent_at for r in finished)
            end = max(r.done_at or r.sent_at for r in finished)
            level.load = join_load(samples, start, end)
        if level.metrics.resent:
            level.warnings.append(
                f"{level.metrics.resent} requests were sent again: the server had closed their pooled "
                "connection before answering (each counts once, timed from its second send)"
            )
        if level.client_cpu is not None and level.client_cpu >= CLIENT_CPU_SATURATED:
            level.warnings.append(
                f"client CPU {level.client_cpu:.0%} of one core: the client may have limited this level "
                "(its own ceiling: sandserve bench --client-ceiling)"
            )
        if level.interrupted:
            level.warnings.append(
                f"interrupted: {len(finished)} requests measured, {level.unfinished} cut off"
            )


def run_bench_sync(
    endpoint: Endpoint,
    source: PromptSource,
    config: BenchConfig,
    on_level: Callable[[LevelResult], None] | None = None,
    *,
    load_endpoints: list[Endpoint] | None = None,
) -> BenchRun:
    """Run a benchmark to the end, or until Ctrl-C; the returned run's ``result`` holds what was measured
    either way (``result.interrupted`` says which). KeyboardInterrupt is re-raised after the result is
    complete, so a caller can write it and then exit 130."""
    run = BenchRun(endpoint, source, config, load_endpoints=load_endpoints)
    try:
        asyncio.run(run.run(on_level))
    except KeyboardInterrupt:
        run.result.interrupted = True
        run.result.finished_at = run.result.finished_at or time.time()
        raise BenchInterrupted(run) from None
    return run


class BenchInterrupted(Exception):
    """Ctrl-C during a benchmark; ``run.result`` holds everything measured until then."""

    def __init__(self, run: BenchRun) -> None:
        super().__init__("benchmark interrupted")
        self.run = run
