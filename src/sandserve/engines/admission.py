"""Admission by priority in front of llama-server's slots (llama-server serves first come, first served).

The adapter lets at most as many generation requests through as llama-server has slots; the rest wait here,
highest priority first, then in arrival order, so that an interactive request sent while a batch fills every
slot starts as soon as one slot frees, ahead of the batch's queued requests. While normal-priority traffic is
present (one such request running or waiting, or one seen in the last ``recent_s`` seconds), one slot is
kept for it: low-priority requests may hold at most ``slots - 1``, so the next interactive request does not
wait for a batch request to finish at all.

A person's request also preempts the low-priority requests running when it comes, where they may be preempted
(preemption.py decides which and re-sends them): on a CPU every running slot shares each of llama-server's
steps with the person's prompt. A preempted request goes back to the queue in its old place, ahead of the
requests of its priority that came after it.

Its queue is reported on ``/metrics`` in SGLang's shape (``sandserve:num_queue_reqs{priority="N"}``, the total
under ``priority=""``), which the batch runner reads to back off, with ``sandserve:preemptions_total`` and
the waits for a first token by priority (first_tokens.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sandserve.engines.first_tokens import FirstTokenTimes
from sandserve.engines.priority import DEFAULT_VALUE

#: llama-server's gauge of requests waiting for a slot (its own queue).
DEFERRED_METRIC = "llamacpp:requests_deferred"
#: How many times one request may be preempted; after that it runs to its end, so that people coming
#: steadily cannot keep a batch request from ever finishing (each preemption redoes its answer so far).
MAX_PREEMPTIONS = 3
#: The adapter's count of low-priority requests preempted for people (and sent again).
PREEMPTIONS_METRIC = "sandserve:preemptions_total"

#: How long after the last normal-priority request its slot stays kept.
RECENT_S = 30.0


@dataclass(eq=False)
class Ticket:
    """One request's place in the queue. ``order`` is its arrival, kept when it is preempted; ``preempted``
    is set when a person's request wants its slot back."""

    priority: int
    order: int
    preemptible: bool = False
    preempted: asyncio.Event = field(default_factory=asyncio.Event)
    slot: int | None = None
    """The llama-server slot it was last given (``pin``), if any."""
    times_preempted: int = 0


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[int, int]
    ticket: Ticket = field(compare=False)
    ready: asyncio.Future[None] = field(compare=False)

    @property
    def priority(self) -> int:
        return self.ticket.priority


class AdmissionQueue:
    """At most ``slots`` requests admitted at once, by priority; one slot kept for normal priority while it is
    present. ``clock`` is injectable for tests."""

    def __init__(
        self, slots: int, *, recent_s: float = RECENT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1 (got {slots})")
        self.slots = slots
        self.recent_s = recent_s
        self._clock = clock
        self._waiting: list[_Waiter] = []
        self._order = itertools.count()
        self.running: Counter[int] = Counter()
        self._held: set[Ticket] = set()
        self._normal_seen_at: float | None = None
        self.preemptions = 0
        """Requests preempted and sent again (counted by whoever sends them again)."""
        self.first_tokens = FirstTokenTimes(clock)
        """Streamed requests' waits for their first token, queue included (timed by whoever streams them)."""

    # --- what it is doing -----------------------------------------------------------------------------

    def waiting(self) -> Counter[int]:
        return Counter(w.priority for w in self._waiting if not w.ready.done())

    def normal_present(self) -> bool:
        if self.people_served():
            return True
        seen = self._normal_seen_at
        return seen is not None and self._clock() - seen < self.recent_s

    def pinned_slots(self) -> frozenset[int]:
        """The llama-server slots that admitted requests are pinned to (``pin``)."""
        return frozenset(ticket.slot for ticket in self._held if ticket.slot is not None)

    def people_served(self) -> bool:
        """A normal-or-higher request is running or waiting now."""
        return any(p >= DEFAULT_VALUE for p in self.running if self.running[p]) or any(
            w.priority >= DEFAULT_VALUE for w in self._waiting
        )

    def limit_for(self, priority: int) -> int:
        """How many requests may be running when one of ``priority`` starts. A low-priority request starts
        no new work while a person's request is being served (on a CPU every slot's prompt shares the same
        cores, so a batch prompt started now would slow the person's first token), and leaves one slot free
        for the next person while people have been seen lately."""
        if priority >= DEFAULT_VALUE or self.slots == 1:
            return self.slots
        if self.people_served():
            return 0
        return self.slots - 1 if self.normal_present() else self.slots

    # --- admitting ------------------------------------------------------------------------------------

    def ticket(self, priority: int, *, preemptible: bool = False) -> Ticket:
        return Ticket(priority, next(self._order), preemptible)

    @contextlib.asynccontextmanager
    async def admitted(self, request: int | Ticket) -> AsyncIterator[Ticket]:
        """Wait for a slot (highest priority first, then the earliest ticket), hold it for the body, then
        hand it on. A person's request preempts the preemptible low-priority requests running as it comes."""
        ticket = self.ticket(request) if isinstance(request, int) else request
        priority = ticket.priority
        if priority >= DEFAULT_VALUE:
            self._normal_seen_at = self._clock()
            self._preempt_for_people()
        ticket.preempted.clear()
        waiter = _Waiter((-priority, ticket.order), ticket, asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiting, waiter)
        self._dispatch()
        try:
            await waiter.ready
        except asyncio.CancelledError:
            # The client went away while waiting: its place is given up (or, if it was admitted in the same
            # moment, its slot is handed on).
            if waiter.ready.done() and not waiter.ready.cancelled():
                self._release(ticket)
            else:
                self._forget(waiter)
            raise
        try:
            yield ticket
        finally:
            if priority >= DEFAULT_VALUE:
                self._normal_seen_at = self._clock()
            self._release(ticket)

    def pin(self, ticket: Ticket) -> int:
        """A llama-server slot for an admitted ticket, among those no other pinned ticket holds. A person's
        request gets the lowest: llama-server reads the prompts of its slots in slot order, up to its batch
        size a step, so a person's prompt goes ahead of any batch prompt still being read. A batch request
        gets the slot it had (its prompt is still cached there when it is sent again), else the highest."""
        taken = {held.slot for held in self._held if held is not ticket and held.slot is not None}
        free = [slot for slot in range(self.slots) if slot not in taken] or list(range(self.slots))
        if ticket.priority >= DEFAULT_VALUE:
            ticket.slot = free[0]
        elif ticket.slot not in free:
            ticket.slot = free[-1]
        return ticket.slot if ticket.slot is not None else free[-1]

    def _preempt_for_people(self) -> None:
        for held in self._held:
            if (
                held.preemptible
                and held.priority < DEFAULT_VALUE
                and not held.preempted.is_set()
                and held.times_preempted < MAX_PREEMPTIONS
            ):
                held.times_preempted += 1
                held.preempted.set()

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(waiter)
            heapq.heapify(self._waiting)
        self._dispatch()

    def _release(self, ticket: Ticket) -> None:
        self._held.discard(ticket)  # its slot is free again (ticket.slot stays: the one it prefers)
        self.running[ticket.priority] -= 1
        if self.running[ticket.priority] <= 0:
            del self.running[ticket.priority]
        self._dispatch()

    def _dispatch(self) -> None:
        """Admit from the head of the queue while the head fits; a low-priority head that does not fit (its
        slot is kept) holds back everything behind it, which is lower or equal."""
        while self._waiting:
            head = self._waiting[0]
            if head.ready.done():  # cancelled while waiting
                heapq.heappop(self._waiting)
                continue
            if sum(self.running.values()) >= self.limit_for(head.priority):
                return
            heapq.heappop(self._waiting)
            self.running[head.priority] += 1
            self._held.add(head.ticket)
            head.ready.set_result(None)

    # --- reporting ------------------------------------------------------------------------------------

    def merged_metrics(self, upstream: str) -> str:
        """llama-server's /metrics as the endpoint's: a request waiting here for a slot is one llama-server
        would otherwise have deferred, so ``llamacpp:requests_deferred`` counts both (what ``top`` and the
        autoscaler read as queued); the queue's own gauges, by priority, follow."""
        waiting = sum(self.waiting().values())
        lines = []
        for line in upstream.rstrip("\n").splitlines():
            name, _, value = line.partition(" ")
            if name == DEFERRED_METRIC and waiting:
                with contextlib.suppress(ValueError):
                    line = f"{name} {float(value) + waiting:g}"
            lines.append(line)
        return "\n".join(lines) + "\n" + self.metrics_text()

    def metrics_text(self) -> str:
        """The queue in Prometheus text, in SGLang's shape (the total under priority="")."""
        waiting, running = self.waiting(), self.running
        lines = [
            "# HELP sandserve:num_queue_reqs Requests waiting in the adapter for a llama-server slot.",
            "# TYPE sandserve:num_queue_reqs gauge",
            f'sandserve:num_queue_reqs{{priority=""}} {sum(waiting.values())}',
            *(f'sandserve:num_queue_reqs{{priority="{p}"}} {n}' for p, n in sorted(waiting.items())),
            "# HELP sandserve:num_running_reqs Requests the adapter let through to llama-server's slots.",
            "# TYPE sandserve:num_running_reqs gauge",
            f'sandserve:num_running_reqs{{priority=""}} {sum(running.values())}',
            *(f'sandserve:num_running_reqs{{priority="{p}"}} {n}' for p, n in sorted(running.items())),
            f"# HELP {PREEMPTIONS_METRIC} Low-priority requests stopped for a person's and sent again.",
            f"# TYPE {PREEMPTIONS_METRIC} counter",
            f"{PREEMPTIONS_METRIC} {self.preemptions}",
        ]
        return "\n".join(lines) + "\n" + self.first_tokens.metrics_text()


def slots_from_command(command: list[str]) -> int | None:
    """llama-server's slot count from its command line (``-np N`` / ``--parallel N``), None if not given."""
    for i, arg in enumerate(command):
        if arg in ("-np", "--parallel") and i + 1 < len(command):
            try:
                return int(command[i + 1])
            except ValueError:
                return None
        if arg.startswith("--parallel="):
            with contextlib.suppress(ValueError):
                return int(arg.split("=", 1)[1])
    return None
