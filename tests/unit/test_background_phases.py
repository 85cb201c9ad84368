"""The phases of ``bench --background``: how long the batch runs alone, and the headline when it finished
nothing."""

from __future__ import annotations

import asyncio
import time

from sandserve.batch import BatchResult
from sandserve.observe.background import (
    ALONE_MIN_FINISHED,
    BATCH_ALONE,
    WITH_PRIORITY,
    BackgroundResult,
    Phase,
    wait_for_the_batch_alone,
)


def _finish_later(finished: list[tuple[float, BatchResult]], delays: list[float]) -> asyncio.Task[None]:
    async def finish() -> None:
        for n, delay in enumerate(delays):
            await asyncio.sleep(delay)
            finished.append((time.monotonic(), BatchResult(custom_id=f"r{n}", status_code=200)))

    return asyncio.ensure_future(finish())


def test_the_batch_alone_runs_on_until_a_few_of_its_requests_have_finished():
    async def scenario() -> int:
        finished: list[tuple[float, BatchResult]] = [(0.0, BatchResult(custom_id="before", status_code=200))]
        started = time.monotonic()
        # Four finish soon after the planned length, the fifth much later.
        feeder = _finish_later(finished, [0.1] * ALONE_MIN_FINISHED + [60])
        await asyncio.wait_for(wait_for_the_batch_alone(finished, started, planned_s=0.05), 30)
        feeder.cancel()
        return sum(1 for at, _ in finished if at >= started)

    # The one that finished before the phase does not count: it waits for four of the phase's own, no more.
    assert asyncio.run(scenario()) == ALONE_MIN_FINISHED


def test_the_batch_alone_gives_up_when_nothing_finishes():
    finished: list[tuple[float, BatchResult]] = []
    asyncio.run(asyncio.wait_for(wait_for_the_batch_alone(finished, time.monotonic(), planned_s=0.02), 30))
    assert finished == []


def test_the_headline_says_dash_where_the_batch_finished_nothing_alone():
    result = BackgroundResult(endpoint={}, interactive_dataset="", batch_dataset="", plan={})
    result.phases = [Phase(BATCH_ALONE, wall_s=1.0, batch_priority="low")]
    result.phases.append(Phase(WITH_PRIORITY, wall_s=1.0, batch_priority="low", batch_tokens=100))
    assert result.batch_ratio() is None
    assert result.headline().endswith("batch -x alone")
    result.phases[0].batch_tokens = 200
    assert result.batch_ratio() == 0.5
