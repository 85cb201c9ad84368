"""SGLang's scheduler as the stand-in's clients see it: how many requests run at once, the order the rest
start in (first come, or by priority with --enable-priority-scheduling), a request's ``priority`` read as
SGLang's pydantic model reads it, and the per-priority series SGLang's /metrics has then."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .sglang_state import ServerConfig

#: server_args.py's --schedule-policy choices (0.5.12.post1); priority scheduling takes only fcfs and lof.
SCHEDULE_POLICIES = ("lpm", "random", "fcfs", "dfs-weight", "lof", "priority", "routing-key")
PRIORITY_POLICIES = ("fcfs", "lof")


class PriorityScheduler:
    """The scheduler's waiting queue as seen from outside: at most ``max_running_requests`` run; the rest wait
    first come, first served, or, with --enable-priority-scheduling, by priority then arrival
    (schedule_policy.py ``_sort_by_priority_and_fcfs``; higher values first unless
    --schedule-low-priority-values-first). A request without a priority gets --default-priority-value
    (tokenizer_manager.py ``_set_default_priority``), else the lowest there is (scheduler.py
    ``_set_or_validate_priority``). Without priority scheduling a request's priority is ignored."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.enabled = config.enable_priority_scheduling
        self.sign = 1 if config.schedule_low_priority_values_first else -1
        self.waiting: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self.running: Counter[int | None] = Counter()
        self.started: list[int | None] = []
        """Every request's priority, in the order the scheduler started them."""
        self.labels: Counter[str] = Counter()
        """Finished requests per ``priority`` metric label (tokenizer_manager.py ``collect_metrics``)."""
        self._arrivals = itertools.count()

    def label(self, given: int | None) -> int | None:
        """The priority the tokenizer manager passes on (its default filled in)."""
        if self.enabled and given is None:
            return self.config.default_priority_value
        return given

    def effective(self, given: int | None) -> int | None:
        labelled = self.label(given)
        if not self.enabled:
            return None
        if labelled is None:
            return sys.maxsize if self.config.schedule_low_priority_values_first else -sys.maxsize - 1
        return labelled

    async def run(
        self, given: int | None, work: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        priority = self.effective(given)
        ready = asyncio.get_running_loop().create_future()
        order = (self.sign * priority) if priority is not None else 0
        heapq.heappush(self.waiting, (order, next(self._arrivals), priority or 0, ready))
        self._start_next()
        try:
            await ready
        except asyncio.CancelledError:
            if ready.done() and not ready.cancelled():
                self._finish(priority)
            raise
        try:
            return await work()
        finally:
            label = self.label(given)
            self.labels["" if label is None or not self.enabled else str(label)] += 1
            self._finish(priority)

    def _finish(self, priority: int | None) -> None:
        self.running[priority] -= 1
        self._start_next()

    def _start_next(self) -> None:
        while self.waiting and sum(self.running.values()) < self.config.running_requests:
            _, _, value, ready = heapq.heappop(self.waiting)
            if ready.done():
                continue
            priority = value if self.enabled else None
            self.running[priority] += 1
            self.started.append(priority)
            ready.set_result(None)

    def queued(self) -> Counter[int]:
        return Counter(value for _, _, value, ready in self.waiting if not ready.done())


def priority_metrics(rows: list[tuple[str, str, float]], name: str, scheduler: PriorityScheduler) -> str:
    """With priority scheduling every series has a ``priority`` label: counters per request priority (the
    tokenizer's labels), the queue gauges as a total under ``priority=""`` plus one series per priority
    (metrics_collector.py ``_log_gauge_queue_count``)."""
    running = Counter(p for p, n in scheduler.running.items() for _ in range(n) if p is not None)
    by_gauge = {"num_running_reqs": running, "num_queue_reqs": scheduler.queued()}
    lines = []
    for kind, metric, value in rows:
        lines += [f"# HELP sglang:{metric} {metric}.", f"# TYPE sglang:{metric} {kind}"]
        if metric == "num_requests_total":
            for label, count in sorted(scheduler.labels.items()):
                lines.append(f'sglang:{metric}{{model_name="{name}",priority="{label}"}} {float(count)}')
            continue
        if metric in by_gauge:
            value = sum(by_gauge[metric].values())
        lines.append(f'sglang:{metric}{{model_name="{name}",priority=""}} {float(value)}')
        for priority, count in sorted(by_gauge.get(metric, Counter()).items()):
            lines.append(f'sglang:{metric}{{model_name="{name}",priority="{priority}"}} {float(count)}')
    return "\n".join(lines) + "\n"


def given_priority(body: bytes) -> int | str | None:
    try:
        value = json.loads(body).get("priority")
    except (ValueError, AttributeError):
        return None
    return priority_value(value)


def priority_value(value: Any) -> int | str | None:
    """A request's ``priority`` as pydantic reads ``Optional[int]`` (lax: "3" and 3.0 are 3); the text of
    pydantic's complaint when it is not an integer."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    if isinstance(value, float):
        return (
            "{'type': 'int_from_float', 'loc': ('body', 'priority'), 'msg': 'Input should be a valid "
            "integer, got a number with a fractional part'}"
        )
    return (
        "{'type': 'int_parsing', 'loc': ('body', 'priority'), 'msg': 'Input should be a valid integer, "
        "unable to parse string as an integer'}"
    )
