"""How long requests waited for their first token at the llama-server adapter, by priority.

A streamed request's wait runs from its arrival at the adapter (its time in the admission queue included)
to the first line of its answer written back, which llama-server sends with the first token. Reported on
``/metrics`` as a Prometheus summary per priority (``sandserve:time_to_first_token_seconds_sum`` and
``_count``), which the batch runner reads to tell when people are being slowed (batch/pace.py). Answers
asked for whole are not counted: their first token is not seen.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable

from sandserve.engines.priority import FIRST_TOKEN_METRIC


class FirstTokenTimer:
    """One request's wait, started when it arrived; called when its first token is written back (later
    calls count nothing)."""

    def __init__(self, times: FirstTokenTimes, priority: int) -> None:
        self._times = times
        self._priority = priority
        self._started = times.clock()
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._times.seconds[self._priority] += self._times.clock() - self._started
            self._times.count[self._priority] += 1


class FirstTokenTimes:
    """Seconds to the first token, summed and counted per priority since the adapter started."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds: defaultdict[int, float] = defaultdict(float)
        self.count: Counter[int] = Counter()

    def timer(self, priority: int) -> FirstTokenTimer:
        return FirstTokenTimer(self, priority)

    def metrics_text(self) -> str:
        lines = [
            f"# HELP {FIRST_TOKEN_METRIC} Seconds from a streamed request's arrival to its first token.",
            f"# TYPE {FIRST_TOKEN_METRIC} summary",
        ]
        for priority in sorted(self.count):
            lines.append(f'{FIRST_TOKEN_METRIC}_sum{{priority="{priority}"}} {self.seconds[priority]:.6f}')
            lines.append(f'{FIRST_TOKEN_METRIC}_count{{priority="{priority}"}} {self.count[priority]}')
        return "\n".join(lines) + "\n"
