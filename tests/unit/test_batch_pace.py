"""The batch's in-flight count: halved while people wait, one back per quiet reading."""

from __future__ import annotations

import asyncio

from sandserve.batch.pace import Aimd, InFlightGate


def test_people_waiting_halve_the_batch_and_quiet_readings_bring_it_back_one_at_a_time():
    aimd = Aimd(ceiling=16)
    assert [aimd.observe(3), aimd.observe(1), aimd.observe(2)] == [8, 4, 2]
    assert aimd.yielding and aimd.decreases == 3 and aimd.lowest == 2
    assert [aimd.observe(0) for _ in range(3)] == [3, 4, 5]
    for _ in range(20):
        aimd.observe(0)
    assert aimd.limit == 16 and not aimd.yielding and aimd.lowest == 2


def test_the_batch_never_stops_altogether():
    aimd = Aimd(ceiling=2)
    for _ in range(5):
        aimd.observe(10)
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
