"""A batch that makes room for people: its in-flight count follows the endpoint's own load.

While requests of a higher priority than the batch's wait at the endpoint (SGLang's, the llama-server
adapter's and smg's queue gauges by priority, read from ``/metrics``), or wait longer for their first token
than they did at best in this run (where the endpoint reports that by priority: the llama-server adapter),
the batch halves how many requests it keeps in flight; otherwise it adds one back per reading, up to its
ceiling (additive increase, multiplicative decrease, as TCP does). An endpoint that reports neither leaves the
batch at its ceiling. A fixed ``--concurrency`` turns all this off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from sandserve.endpoint import Endpoint
from sandserve.engines.priority import Priority, first_tokens_above, waiting_above, waiting_by_priority

#: How often the endpoint's queue is read.
READ_INTERVAL_S = 0.5
#: Each decrease keeps this share of the in-flight count.
DECREASE_FACTOR = 0.5
#: People count as slowed when their mean wait for a first token between two readings is more than this
#: many times the lowest such mean seen in the run (the wait the batch aims to keep them near).
SLOWED_FACTOR = 1.5


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

    def observe(self, make_room: bool) -> int:
        if make_room:
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


@dataclass(frozen=True)
class Load:
    """One reading of the endpoint's ``/metrics`` for the people the batch should make room for."""

    waiting: int | None
    """Their requests waiting at the endpoint; None when it does not report a queue by priority."""
    first_tokens: tuple[float, int] | None
    """Their seconds to a first token summed, and requests counted, since the server started; None when it
    does not report them."""


@dataclass
class FirstTokenWatch:
    """People's mean wait for a first token between two readings, against the lowest seen in the run."""

    last: tuple[float, int] | None = None
    best_s: float | None = None

    def slowed(self, total: tuple[float, int] | None) -> bool:
        last, self.last = self.last, total
        if total is None or last is None:
            return False
        seconds, count = total[0] - last[0], total[1] - last[1]
        if count <= 0 or seconds < 0:
            return False  # no first token since the last reading (or the server started again)
        mean_s = seconds / count
        self.best_s = mean_s if self.best_s is None else min(self.best_s, mean_s)
        return mean_s > SLOWED_FACTOR * self.best_s


async def read_load(session: aiohttp.ClientSession, endpoint: Endpoint, priority: Priority) -> Load | None:
    """What the endpoint reports of the requests of a higher priority than ``priority``; None when it reports
    nothing the batch can follow."""
    try:
        async with session.get(f"{endpoint.url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as answer:
            if answer.status != 200:
                return None
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return None
    by_priority = waiting_by_priority(text)
    load = Load(
        waiting=None if by_priority is None else waiting_above(by_priority, priority),
        first_tokens=first_tokens_above(text, priority),
    )
    return None if load.waiting is None and load.first_tokens is None else load


async def follow_load(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    priority: Priority,
    aimd: Aimd,
    gate: InFlightGate,
    *,
    interval_s: float = READ_INTERVAL_S,
) -> None:
    """Read the endpoint's load every ``interval_s`` and set the gate's limit from it, until cancelled."""
    unreported = 0
    first_tokens = FirstTokenWatch()
    while True:
        load = await read_load(session, endpoint, priority)
        if load is None:
            unreported += 1
            if unreported >= 3 and not aimd.yielding:
                return  # the endpoint reports nothing by priority: nothing to follow
            make_room = False  # no reading: no one is known to wait, so the batch climbs back
        else:
            unreported = 0
            slowed = first_tokens.slowed(load.first_tokens)
            make_room = bool(load.waiting) or slowed
        await gate.set_limit(aimd.observe(make_room))
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
