"""Admission by priority in front of a llama-server's slots (llama-server serves first come, first served).

The adapter lets at most as many generation requests through to a llama-server as it has slots; the rest wait
here, highest priority first, then in arrival order, so that a request of higher priority sent while every
slot is taken starts as soon as one frees, ahead of those queued before it. Each of the adapter's
llama-servers has its queue (lanes.py): the people's (normal and high priority, and low when the batch's
server is not running) and the batch's.

The queues are reported on ``/metrics`` in SGLang's shape (``sandserve:num_queue_reqs{priority="N"}``, the
total under ``priority=""``), which the batch runner reads to back off.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

#: llama-server's gauge of requests waiting for a slot (its own queue).
DEFERRED_METRIC = "llamacpp:requests_deferred"


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[int, int]
    priority: int = field(compare=False)
    ready: asyncio.Future[None] = field(compare=False)


class AdmissionQueue:
    """At most ``slots`` requests admitted at once, the highest priority first, then the earliest."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1 (got {slots})")
        self.slots = slots
        self._waiting: list[_Waiter] = []
        self._order = itertools.count()
        self.running: Counter[int] = Counter()

    def waiting(self) -> Counter[int]:
        return Counter(w.priority for w in self._waiting if not w.ready.done())

    @contextlib.asynccontextmanager
    async def admitted(self, priority: int) -> AsyncIterator[None]:
        """Wait for a slot, hold it for the body, then hand it on."""
        waiter = _Waiter((-priority, next(self._order)), priority, asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiting, waiter)
        self._dispatch()
        try:
            await waiter.ready
        except asyncio.CancelledError:
            # The client went away while waiting: its place is given up (or, if it was admitted in the same
            # moment, its slot is handed on).
            if waiter.ready.done() and not waiter.ready.cancelled():
                self._release(priority)
            else:
                self._forget(waiter)
            raise
        try:
            yield
        finally:
            self._release(priority)

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(waiter)
            heapq.heapify(self._waiting)
        self._dispatch()

    def _release(self, priority: int) -> None:
        self.running[priority] -= 1
        if self.running[priority] <= 0:
            del self.running[priority]
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiting and sum(self.running.values()) < self.slots:
            head = heapq.heappop(self._waiting)
            if head.ready.done():  # cancelled while waiting
                continue
            self.running[head.priority] += 1
            head.ready.set_result(None)


def with_queued(upstream_metrics: str, queues: Sequence[AdmissionQueue]) -> str:
    """llama-server's /metrics as the endpoint's: a request waiting in a queue for a slot is one llama-server
    would otherwise have deferred, so ``llamacpp:requests_deferred`` counts both (what ``top`` and the
    autoscaler read as queued); the queues' own gauges, by priority, follow."""
    waiting = sum(sum(queue.waiting().values()) for queue in queues)
    lines = []
    for line in upstream_metrics.rstrip("\n").splitlines():
        name, _, value = line.partition(" ")
        if name == DEFERRED_METRIC and waiting:
            with contextlib.suppress(ValueError):
                line = f"{name} {float(value) + waiting:g}"
        lines.append(line)
    return "\n".join(lines) + "\n" + queue_metrics(queues)


def queue_metrics(queues: Sequence[AdmissionQueue]) -> str:
    """The queues together in Prometheus text, in SGLang's shape (the total under priority="")."""
    waiting: Counter[int] = Counter()
    running: Counter[int] = Counter()
    for queue in queues:
        waiting.update(queue.waiting())
        running.update(queue.running)
    lines = [
        "# HELP sandserve:num_queue_reqs Requests waiting in the adapter for a llama-server slot.",
        "# TYPE sandserve:num_queue_reqs gauge",
        f'sandserve:num_queue_reqs{{priority=""}} {sum(waiting.values())}',
        *(f'sandserve:num_queue_reqs{{priority="{p}"}} {n}' for p, n in sorted(waiting.items())),
        "# HELP sandserve:num_running_reqs Requests the adapter let through to llama-server's slots.",
        "# TYPE sandserve:num_running_reqs gauge",
        f'sandserve:num_running_reqs{{priority=""}} {sum(running.values())}',
        *(f'sandserve:num_running_reqs{{priority="{p}"}} {n}' for p, n in sorted(running.items())),
    ]
    return "\n".join(lines) + "\n"


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
