"""People's requests while a batch runs: what priority buys them, and what it costs the batch.

Four phases against one endpoint, in one run:
1. ``idle``: interactive requests alone, at a set rate (Poisson arrivals, the same times in every phase;
   streamed, TTFT and E2E);
2. ``batch alone``: the batch alone, for as long as the idle phase took (and on until a few of its requests
   have finished, so a short phase on a slow machine still measures it);
3. ``batch, no priority``: both at once, the batch at normal priority and a fixed in-flight count, as any
   batch client sends it;
4. ``batch, priority``: both at once, the batch as sandserve sends it: low priority, and making room while
   people wait (batch.pace) unless its concurrency is fixed.

The batch is sandserve's own batch runner, cut off when a phase ends; its throughput is the tokens (prompt and
output) of the requests it finished during the phase, over the phase's wall time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from sandserve.batch import BatchRequest, BatchResult, run_requests
from sandserve.endpoint import Endpoint
from sandserve.errors import ConfigError, EndpointUnavailableError
from sandserve.observe.datasets import BenchPrompt, PromptSource
from sandserve.observe.metrics import LevelMetrics, RequestRecord, level_metrics
from sandserve.observe.stream import bench_session, chat_body, stream_chat

IDLE, BATCH_ALONE, NO_PRIORITY, WITH_PRIORITY = "idle", "batch alone", "batch, no priority", "batch, priority"
PHASES = (IDLE, BATCH_ALONE, NO_PRIORITY, WITH_PRIORITY)
#: Seconds the batch runs before the interactive requests of a phase start (it fills the slots first).
BATCH_HEAD_START_S = 2.0
#: Seconds between phases, for the last phase's cut-off requests to leave the server.
SETTLE_S = 2.0
#: Batch requests the ``batch alone`` phase waits to see finish: a throughput of fewer is noise, and of none
#: leaves every "vs alone" ratio undefined (a short phase on a slow machine may see none).
ALONE_MIN_FINISHED = 4
#: The longest the ``batch alone`` phase waits for them, in multiples of its planned length.
ALONE_MAX_STRETCH = 10.0


@dataclass(frozen=True)
class BackgroundPlan:
    rate: float = 0.5
    """Interactive requests per second (Poisson arrivals)."""
    requests: int = 20
    """Interactive requests per phase."""
    batch_concurrency: int | None = None
    """The batch's in-flight count (None: from the server's capacity; with priority it follows its load)."""
    warmup: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.rate == float("inf"):
            raise ConfigError(
                f"The interactive rate must be a positive number of requests per second (got {self.rate}).",
                hint="For example --rate 0.5.",
            )
        if self.requests < 1:
            raise ConfigError("--requests must be at least 1.", hint="Interactive requests per phase.")

    @property
    def expected_s(self) -> float:
        return self.requests / self.rate


@dataclass
class Phase:
    name: str
    wall_s: float = 0.0
    interactive: LevelMetrics | None = None
    batch_requests: int = 0
    batch_tokens: int = 0
    """Prompt and output tokens of the batch requests finished during the phase."""
    batch_output_tokens: int = 0
    batch_priority: str | None = None
    batch_lowest_in_flight: int | None = None
    batch_times_yielded: int = 0

    @property
    def batch_tokens_per_s(self) -> float | None:
        if self.batch_priority is None or self.wall_s <= 0:
            return None
        return self.batch_tokens / self.wall_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "batch_tokens_per_s": self.batch_tokens_per_s}


@dataclass
class BackgroundResult:
    endpoint: dict[str, Any]
    interactive_dataset: str
    batch_dataset: str
    plan: dict[str, Any]
    phases: list[Phase] = field(default_factory=list)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def ttft_p99_ratio(self, name: str = WITH_PRIORITY) -> float | None:
        """Interactive TTFT p99 in phase ``name`` over its idle value."""
        return _ratio(_ttft_p99(self.phase(name)), _ttft_p99(self.phase(IDLE)))

    def batch_ratio(self, name: str = WITH_PRIORITY) -> float | None:
        """The batch's tokens/s in phase ``name`` over its tokens/s alone."""
        here, alone = self.phase(name), self.phase(BATCH_ALONE)
        return _ratio(here.batch_tokens_per_s if here else None, alone.batch_tokens_per_s if alone else None)

    def headline(self) -> str:
        x, y = self.ttft_p99_ratio(), self.batch_ratio()
        shown_x = f"{x:.2f}" if x is not None else "-"
        shown_y = f"{y:.2f}" if y is not None else "-"
        return f"priority: interactive TTFT p99 {shown_x}x idle, batch {shown_y}x alone"

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "interactive_dataset": self.interactive_dataset,
            "batch_dataset": self.batch_dataset,
            "plan": self.plan,
            "phases": [phase.to_dict() for phase in self.phases],
            "interactive_ttft_p99_vs_idle": {
                name: self.ttft_p99_ratio(name) for name in (NO_PRIORITY, WITH_PRIORITY)
            },
            "batch_tokens_per_s_vs_alone": {
                name: self.batch_ratio(name) for name in (NO_PRIORITY, WITH_PRIORITY)
            },
            "headline": self.headline(),
        }


def _ttft_p99(phase: Phase | None) -> float | None:
    return phase.interactive.ttft.p99 if phase and phase.interactive else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def endless_batch(requests: Sequence[BatchRequest]) -> Callable[[], Iterator[BatchRequest]]:
    """An endless supply of the batch's requests (cycled, each with a custom_id of its own). Each phase starts
    from the first request, so later phases may find earlier phases' prompts in the server's cache."""
    if not requests:
        raise ConfigError(
            "The background batch has no requests.", hint="Give a batch file with at least one."
        )

    def supply() -> Iterator[BatchRequest]:
        for n, request in enumerate(itertools.cycle(requests)):
            yield BatchRequest(f"{request.custom_id}#{n}", request.body, request.url)

    return supply


def batch_from_prompts(source: PromptSource) -> Callable[[], Iterator[BatchRequest]]:
    """An endless supply of batch requests (chat completions) from a prompt source: a generated source gives
    fresh prompts every time, so no phase finds another's prompts in the server's cache."""

    def supply() -> Iterator[BatchRequest]:
        for n in itertools.count():
            [p] = source.take(1)
            yield BatchRequest(f"bg-{n}", {"messages": p.messages, "max_tokens": p.max_tokens, **p.extra})

    return supply


class BackgroundBench:
    def __init__(
        self,
        endpoint: Endpoint,
        interactive: PromptSource,
        batch: Callable[[], Iterator[BatchRequest]],
        batch_name: str,
        plan: BackgroundPlan,
        *,
        public_endpoint: dict[str, Any],
    ) -> None:
        self.endpoint = endpoint
        self.interactive = interactive
        self.supply = batch
        self.plan = plan
        self.url = endpoint.base_url + "/chat/completions"
        self.result = BackgroundResult(
            endpoint=public_endpoint,
            interactive_dataset=interactive.describe(),
            batch_dataset=batch_name,
            plan=asdict(plan),
        )
        rng = random.Random(plan.seed)
        self._gaps = [rng.expovariate(plan.rate) for _ in range(plan.requests)]
        """Seconds between interactive requests: the same in every phase, so that phases differ only in
        the batch beside them (two people who come together wait for each other, idle too)."""

    async def run(self, on_phase: Callable[[Phase], None] | None = None) -> BackgroundResult:
        async with bench_session(self.endpoint) as session:
            await self._warm_up(session)
            steps: list[tuple[str, str | None, bool]] = [
                (IDLE, None, False),
                (BATCH_ALONE, "low", False),
                (NO_PRIORITY, "normal", False),
                (WITH_PRIORITY, "low", self.plan.batch_concurrency is None),
            ]
            for name, priority, adaptive in steps:
                phase = await self._phase(session, name, priority, adaptive)
                self.result.phases.append(phase)
                if on_phase:
                    on_phase(phase)
                await asyncio.sleep(SETTLE_S)
        return self.result

    async def _warm_up(self, session: aiohttp.ClientSession) -> None:
        records = [RequestRecord(index=-1 - i, sent_at=0.0) for i in range(self.plan.warmup)]
        prompts = self.interactive.take(len(records))
        await asyncio.gather(*(self._send(session, p, r) for p, r in zip(prompts, records, strict=True)))
        if records and not any(r.ok for r in records):
            reason = next((r.error for r in records if r.error), "no answer")
            raise EndpointUnavailableError(self.endpoint.url, f"every warm-up request failed: {reason}")

    async def _send(self, session: aiohttp.ClientSession, prompt: BenchPrompt, record: RequestRecord) -> None:
        body = chat_body(self.endpoint.model, prompt.messages, prompt.max_tokens, prompt.extra)
        await stream_chat(session, self.url, body, record)

    async def _interactive(self, session: aiohttp.ClientSession) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        tasks = []
        prompts = self.interactive.take(self.plan.requests)
        for i, (prompt, gap) in enumerate(zip(prompts, self._gaps, strict=False)):
            record = RequestRecord(index=i, sent_at=time.perf_counter())
            records.append(record)
            tasks.append(asyncio.ensure_future(self._send(session, prompt, record)))
            await asyncio.sleep(gap)
        await asyncio.gather(*tasks)
        return records

    async def _phase(
        self, session: aiohttp.ClientSession, name: str, priority: str | None, adaptive: bool
    ) -> Phase:
        phase = Phase(name, batch_priority=priority)
        finished: list[tuple[float, BatchResult]] = []
        limits: list[int] = []
        batch = None
        if priority is not None:
            batch = asyncio.ensure_future(
                run_requests(
                    self.endpoint,
                    self.supply(),
                    lambda result: finished.append((time.monotonic(), result)),
                    concurrency=self.plan.batch_concurrency,
                    adaptive=adaptive,
                    priority=priority,  # type: ignore[arg-type]  # one of the Priority names above
                    on_progress=lambda progress: limits.append(progress.in_flight_limit or 0),
                )
            )
            await asyncio.sleep(BATCH_HEAD_START_S)
        started = time.monotonic()
        try:
            if name == BATCH_ALONE:
                idle = self.result.phase(IDLE)
                planned = max(self.plan.expected_s, idle.wall_s if idle else 0.0)
                await wait_for_the_batch_alone(finished, started, planned)
            else:
                phase.interactive = level_metrics(await self._interactive(session))
        finally:
            ended = time.monotonic()
            phase.wall_s = ended - started
            if batch is not None:
                if batch.done() and not batch.cancelled() and batch.exception() is not None:
                    raise batch.exception()  # type: ignore[misc]  # the batch stopped on its own: say why
                batch.cancel()
                await asyncio.gather(batch, return_exceptions=True)
        during = [result for at, result in finished if started <= at <= ended and result.ok]
        phase.batch_requests = len(during)
        phase.batch_tokens = sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in during)
        phase.batch_output_tokens = sum(r.usage.completion_tokens for r in during)
        followed = [limit for limit in limits if limit]
        if adaptive and followed:
            phase.batch_lowest_in_flight = min(followed)
            phase.batch_times_yielded = sum(1 for a, b in itertools.pairwise(followed) if b < a)
        return phase


async def wait_for_the_batch_alone(
    finished: list[tuple[float, BatchResult]], started: float, planned_s: float
) -> None:
    """The ``batch alone`` phase: ``planned_s`` (as long as the idle phase took), then on until a few batch
    requests have finished since ``started``, or ten times the planned length has gone by."""
    await asyncio.sleep(planned_s)
    deadline = started + ALONE_MAX_STRETCH * planned_s
    while time.monotonic() < deadline:
        if sum(1 for at, result in finished if at >= started and result.ok) >= ALONE_MIN_FINISHED:
            return
        await asyncio.sleep(0.1)
