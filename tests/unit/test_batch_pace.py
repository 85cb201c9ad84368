"""The batch's in-flight count: halved while people wait or are slowed, one back per quiet reading."""

from __future__ import annotations

import asyncio

import pytest

from sandserve.batch.pace import Aimd, FirstTokenWatch, InFlightGate
from sandserve.engines.first_tokens import FirstTokenTimes
from sandserve.engines.priority import first_tokens_above


def test_people_waiting_halve_the_batch_and_quiet_readings_bring_it_back_one_at_a_time():
    aimd = Aimd(ceiling=16)
    assert [aimd.observe(True) for _ in range(3)] == [8, 4, 2]
    assert aimd.yielding and aimd.decreases == 3 and aimd.lowest == 2
    assert [aimd.observe(False) for _ in range(3)] == [3, 4, 5]
    for _ in range(20):
        aimd.observe(False)
    assert aimd.limit == 16 and not aimd.yielding and aimd.lowest == 2


def test_the_batch_never_stops_altogether():
    aimd = Aimd(ceiling=2)
    for _ in range(5):
        aimd.observe(True)
    assert aimd.limit == 1 and aimd.decreases == 1


def test_a_lower_limit_lets_no_new_request_in_until_enough_have_finished():
    async def scenario() -> list[int]:
        gate, in_use_seen = InFlightGate(3), []
        release = asyncio.Event()

        async def one() -> None:
            async with gate:
                in_use_seen.append(gate.in_use)
                await release.wait()

        tasks = [asyncio.ensure_future(one()) for _ in range(3)]
        await asyncio.sleep(0.01)
        await gate.set_limit(1)
        late = asyncio.ensure_future(one())
        await asyncio.sleep(0.01)
        assert gate.in_use == 3 and not late.done()  # in flight: never cut; the newcomer waits
        release.set()
        await asyncio.gather(*tasks, late)
        return in_use_seen

    assert asyncio.run(scenario()) == [1, 2, 3, 1]


def test_people_count_as_slowed_when_their_first_tokens_take_longer_than_their_best_by_half():
    watch = FirstTokenWatch()
    assert not watch.slowed((0.0, 0))  # the first reading only sets where counting starts
    assert not watch.slowed((0.2, 2))  # 0.1 s each: the best so far
    assert watch.slowed((0.5, 3))  # 0.3 s: three times the best
    assert not watch.slowed((0.5, 3))  # no first token since: nothing to judge
    assert not watch.slowed((0.64, 4))  # 0.14 s: within 1.5x the best
    assert watch.best_s == pytest.approx(0.1)
    assert not watch.slowed(None) and not watch.slowed((0.1, 1))  # not reported; the server started again


def test_the_adapters_first_token_waits_read_back_by_priority():
    now = [0.0]
    times = FirstTokenTimes(clock=lambda: now[0])
    person, batch, unseen = times.timer(0), times.timer(-1), times.timer(0)
    now[0] = 0.25
    person()
    person()  # one request's first token counts once
    now[0] = 1.0
    batch()
    text = times.metrics_text()
    assert first_tokens_above(text, "low") == (pytest.approx(0.25), 1)
    assert first_tokens_above(text, "normal") == (0.0, 0)  # nothing above normal
    unseen()
    assert first_tokens_above(times.metrics_text(), "low") == (pytest.approx(1.25), 2)
    assert first_tokens_above(FirstTokenTimes().metrics_text(), "low") == (0.0, 0)  # reported, none yet
    assert first_tokens_above("sglang:num_queue_reqs 0\n", "low") is None  # not reported at all
