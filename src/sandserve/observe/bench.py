"""The serving benchmark: load levels (a concurrency list, Poisson request rates, or a sweep to saturation)
sent by the streaming client, with the server's own load sampled during each level and joined to it.

``BenchRun.result`` is filled as the run goes, so an interrupted run (Ctrl-C) still has every finished
request of every level: the level under way is closed with what it measured and marked interrupted.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from sandserve.endpoint import Endpoint
from sandserve.errors import ConfigError, EndpointUnavailableError
from sandserve.masking import mask_secrets
from sandserve.observe.agent_stream import ROUTES, Api
from sandserve.observe.bench_results import (
    BenchResult,
    LevelProgress,
    LevelResult,
    ProgressCallback,
    ServerGone,
    join_load,
    public_endpoint,
)
from sandserve.observe.datasets import BenchPrompt, PromptSource
from sandserve.observe.loads import EndpointLoad, LoadProbe, combine, endpoint_secrets
from sandserve.observe.metrics import RequestRecord, Slo, level_metrics
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
            endpoint=public_endpoint(endpoint),
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
        self._on_progress: ProgressCallback | None = None

    def levels_planned(self) -> list[str]:
        """The labels of every level the plan names (a sweep's: up to its largest, it may stop sooner)."""
        plan = self.config.plan
        if plan.mode == "sweep":
            return [LevelResult("concurrency", c).label for c in plan.sweep_levels()]
        return [LevelResult(plan.mode, value).label for value in plan.levels]

    async def run(
        self,
        on_level: Callable[[LevelResult], None] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BenchResult:
        """Every level in turn; ``on_level`` sees each finished level, ``on_progress`` each finished
        request."""
        self._on_progress = on_progress
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
                        if self.result.server_gone:
                            break
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
            if self.result.server_gone:
                pass  # the level says why it stopped
            elif (best and throughput < best * (1 + self.config.plan.saturation_gain)) or failed:
                level.saturated = True
                level.warnings.append(
                    "saturated: this level added less than "
                    f"{self.config.plan.saturation_gain:.0%} output tokens/s over the best before it"
                    if not failed
                    else "stopped: more than half of this level's requests failed"
                )
            if on_level:
                on_level(level)
            if level.saturated or self.result.server_gone:
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
        finished: list[RequestRecord] = []

        def report() -> None:
            if self._on_progress is None:
                return
            ttfts = sorted(r.ttft for r in finished if r.ok and r.ttft is not None)
            self._on_progress(
                LevelProgress(
                    label=level.label,
                    done=len(finished),
                    total=len(prompts),
                    failed=len([r for r in finished if not r.ok]),
                    elapsed_s=time.perf_counter() - wall0,
                    ttft_p50_ms=_median(ttfts) * 1000 if ttfts else None,
                )
            )

        check = asyncio.Lock()

        async def send(prompt: BenchPrompt) -> RequestRecord | None:
            if self.result.server_gone:
                return None  # not sent: counted in level.unsent
            record = RequestRecord(index=self._index, sent_at=time.perf_counter())
            self._index += 1
            level.records.append(record)
            await self._send(session, prompt, record)
            if record.connection_lost and not self.result.server_gone:
                async with check:  # one check at a time; the others wait for its answer
                    if not self.result.server_gone:
                        await self._check_server(session, level, wall0)
            return record

        async def one(prompt: BenchPrompt) -> None:
            if gate is None:
                record = await send(prompt)
            else:
                async with gate:
                    record = await send(prompt)
            if record is not None:
                finished.append(record)
                report()

        report()

        try:
            for prompt in prompts:
                if self.result.server_gone:
                    break
                tasks.append(asyncio.ensure_future(one(prompt)))
                if mode == "rate" and not math.isinf(value):
                    await asyncio.sleep(self._rng.expovariate(value))
            await asyncio.gather(*tasks)
            level.unsent = len(prompts) - len(level.records)
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

    async def _check_server(self, session: aiohttp.ClientSession, level: LevelResult, started: float) -> None:
        """After a request failed on its connection: does the server still answer a plain request
        (``GET /v1/models``)? If not, it went away, and the run stops."""
        reason = await server_absence(session, self.endpoint)
        if reason is None:
            return
        self.result.server_gone = ServerGone(
            at=time.time(),
            level=level.label,
            after_s=time.perf_counter() - started,
            reason=mask_secrets(reason, endpoint_secrets(self.endpoint)),
        )

    def _close(self, level: LevelResult, samples: list[EndpointLoad]) -> None:
        finished = [r for r in level.records if r.done_at is not None]
        secrets = endpoint_secrets(self.endpoint)
        gone = self.result.server_gone if self.result.server_gone else None
        for record in finished:
            if gone and record.connection_lost:
                # Lost with the server, not to a stale connection or the client: say so, once.
                record.error = f"the server went away ({record.error})"
                record.resent = 0
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
        if gone and gone.level == level.label:
            message = f"stopped: {gone.describe()}; {level.unsent} requests of this level not sent"
            level.warnings.append(message)


async def server_absence(session: aiohttp.ClientSession, endpoint: Endpoint) -> str | None:
    """None when the server answers ``GET /v1/models`` (any answer from the server itself counts); else what
    came instead: a refused or dropped connection, a timeout, or a proxy's 502/504 (nothing behind it)."""
    try:
        timeout = aiohttp.ClientTimeout(total=15)
        async with session.get(endpoint.base_url + "/models", timeout=timeout) as response:
            if response.status in (502, 504):
                return f"its proxy answers {response.status}: nothing behind it"
            return None
    except aiohttp.ClientConnectorError as exc:
        why = os.strerror(exc.os_error.errno) if exc.os_error.errno else str(exc.os_error)
        return f"{why} at {exc.host}:{exc.port}"
    except aiohttp.ServerDisconnectedError:
        return "it closed the connection without answering"
    except TimeoutError:
        return "no answer within 15 s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _median(ordered: list[float]) -> float:
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def run_bench_sync(
    endpoint: Endpoint,
    source: PromptSource,
    config: BenchConfig,
    on_level: Callable[[LevelResult], None] | None = None,
    *,
    load_endpoints: list[Endpoint] | None = None,
    on_progress: ProgressCallback | None = None,
) -> BenchRun:
    """Run a benchmark to the end, or until Ctrl-C; the returned run's ``result`` holds what was measured
    either way (``result.interrupted`` says which). KeyboardInterrupt is re-raised after the result is
    complete, so a caller can write it and then exit 130."""
    run = BenchRun(endpoint, source, config, load_endpoints=load_endpoints)
    try:
        asyncio.run(run.run(on_level, on_progress))
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
