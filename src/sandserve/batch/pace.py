"""A batch that makes room for people: its in-flight count follows the endpoint's own load.

While requests of a higher priority than the batch's wait at the endpoint (SGLang's, the llama-server
adapter's and smg's queue gauges by priority, read from ``/metrics``), the batch halves how many requests it
keeps in flight; while none wait, it adds one back per reading, up to its ceiling (additive increase,
multiplicative decrease, as TCP does). An endpoint that reports no queue by priority leaves the batch at its
ceiling. A fixed ``--concurrency`` turns all this off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from sandserve.endpoint import Endpoint
from sandserve.engines.priority import Priority, waiting_above, waiting_by_priority

#: How often the endpoint's queue is read.
READ_INTERVAL_S = 0.5
#: Each decrease keeps this share of the in-flight count.
DECREASE_FACTOR = 0.5


@dataclass
class Aimd:
    """The in-flight limit: halved while people wait, one more per quiet reading, within [floor, ceiling]."""

    ceiling: int
    floor: int = 1
    limit: int = 0
    decreases: int = 0
    lowest: int = 0

    def __post_init__(self) -> None:
        self.limit = self.lowest = self.ceiling

    def observe(self, people_waiting: int) -> int:
        if people_waiting > 0:
            lowered = max(self.floor, int(self.limit * DECREASE_FACTOR))
            if lowered < self.limit:
                self.decreases += 1
            self.limit = lowered
        else:
            self.limit = min(self.ceiling, self.limit + 1)
        self.lowest = min(self.lowest, self.limit)
        return self.limit

    @property
    def yielding(self) -> bool:
        return self.limit < self.ceiling


class InFlightGate:
    """A semaphore whose size can change while it is held: a lower limit lets no new request in until
    enough have finished; in-flight requests are never cut."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._changed = asyncio.Condition()

    async def set_limit(self, limit: int) -> None:
        async with self._changed:
            self.limit = limit
            self._changed.notify_all()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()


async def people_waiting(
    session: aiohttp.ClientSession, endpoint: Endpoint, priority: Priority
) -> int | None:
    """Requests of a higher priority than ``priority`` waiting at the endpoint; None when it cannot tell."""
    try:
        async with session.get(f"{endpoint.url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as answer:
            if answer.status != 200:
                return None
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return None
    waiting = waiting_by_priority(text)
    return None if waiting is None else waiting_above(waiting, priority)


async def follow_load(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    priority: Priority,
    aimd: Aimd,
    gate: InFlightGate,
    *,
    interval_s: float = READ_INTERVAL_S,
) -> None:
    """Read the endpoint's queue every ``interval_s`` and set the gate's limit from it, until cancelled."""
    unreported = 0
    while True:
        waiting = await people_waiting(session, endpoint, priority)
        if waiting is None:
            unreported += 1
            if unreported >= 3 and not aimd.yielding:
                return  # the endpoint reports no queue by priority: nothing to follow
            waiting = 0  # no reading: no one is known to wait, so the batch climbs back
        else:
            unreported = 0
        await gate.set_limit(aimd.observe(waiting))
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def paced(
    endpoint: Endpoint, priority: Priority, aimd: Aimd | None, gate: InFlightGate
) -> AsyncIterator[None]:
    """Follow the endpoint's load while the body runs (when ``aimd`` is given), on a connection of its own
    (the batch's may all be busy)."""
    if aimd is None:
        yield
        return
    async with aiohttp.ClientSession(headers=endpoint.request_headers()) as session:
        task = asyncio.ensure_future(follow_load(session, endpoint, priority, aimd, gate))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
