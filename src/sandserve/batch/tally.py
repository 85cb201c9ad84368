"""Running totals of a batch run: progress reports while it runs, the summary at its end."""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter

from sandserve.batch.http import Unfinished
from sandserve.batch.pace import Aimd
from sandserve.batch.types import BatchProgress, BatchResult, BatchSummary, ProgressCallback, rate

PROGRESS_INTERVAL_S = 0.25
#: Unfinished custom_ids (with their last failure) kept for the summary.
PENDING_EXAMPLES = 20


class Tally:
    """Running totals of a run, for progress reports and the summary."""

    def __init__(self, *, total: int | None, skipped: int, started: float) -> None:
        self.total = total
        self.skipped = skipped
        self.succeeded = 0
        self.failed = 0
        self.gave_up = 0
        self.retries = 0
        self.in_flight = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.errors_by_kind: Counter[str] = Counter()
        self.pending_examples: dict[str, str] = {}
        self.stopped_because: str | None = None
        self.unknown_remaining = False
        self.consecutive_unfinished = 0
        self._latencies = array("d")
        self._started = started
        self.pace: Aimd | None = None
        """Set when the run follows the endpoint's load (batch.pace)."""

    def add(self, result: BatchResult) -> None:
        self.consecutive_unfinished = 0
        if result.error is None:
            self.succeeded += 1
            self._latencies.append(result.latency_s)
        else:
            self.failed += 1
            self.errors_by_kind[result.error.code] += 1
        self.input_tokens += result.usage.prompt_tokens
        self.output_tokens += result.usage.completion_tokens
        self.cached_tokens += result.usage.cached_tokens

    def give_up(self, unfinished: Unfinished) -> None:
        self.gave_up += 1
        self.consecutive_unfinished += 1
        if len(self.pending_examples) < PENDING_EXAMPLES:
            self.pending_examples[unfinished.custom_id] = unfinished.reason

    def count_retry(self) -> None:
        self.retries += 1

    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def unfinished(self) -> int:
        if self.total is None:
            return self.gave_up + (1 if self.unknown_remaining else 0)
        return self.total - self.skipped - self.succeeded - self.failed

    def progress(self) -> BatchProgress:
        return BatchProgress(
            total=self.total,
            done=self.skipped + self.succeeded + self.failed,
            skipped=self.skipped,
            succeeded=self.succeeded,
            failed=self.failed,
            in_flight=self.in_flight,
            retries=self.retries,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            elapsed_s=self.elapsed_s(),
            unfinished=self.gave_up,
            in_flight_limit=self.pace.limit if self.pace else None,
            concurrency=self.pace.ceiling if self.pace else None,
        )

    def summary(self, *, concurrency: int, order: str, priority: str = "low") -> BatchSummary:
        wall_s = self.elapsed_s()
        latencies = sorted(self._latencies)
        return BatchSummary(
            requests=self.succeeded + self.failed,
            succeeded=self.succeeded,
            failed=self.failed,
            skipped=self.skipped,
            retries=self.retries,
            wall_s=wall_s,
            requests_per_s=rate(self.succeeded + self.failed, wall_s),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            input_tokens_per_s=rate(self.input_tokens, wall_s),
            output_tokens_per_s=rate(self.output_tokens, wall_s),
            cached_share=self.cached_tokens / self.input_tokens if self.input_tokens else 0.0,
            latency_p50_s=percentile(latencies, 0.50),
            latency_p90_s=percentile(latencies, 0.90),
            latency_p99_s=percentile(latencies, 0.99),
            errors_by_kind=dict(self.errors_by_kind),
            concurrency=concurrency,
            order=order,
            unfinished=self.unfinished(),
            stopped_because=self.stopped_because,
            pending_examples=dict(self.pending_examples),
            priority=priority,
            lowest_in_flight=self.pace.lowest if self.pace else None,
            times_yielded=self.pace.decreases if self.pace else 0,
        )


class ProgressReporter:
    def __init__(self, callback: ProgressCallback | None, tally: Tally) -> None:
        self._callback = callback
        self._tally = tally
        self._last = -math.inf

    def maybe_report(self) -> None:
        if self._callback is not None and time.monotonic() - self._last >= PROGRESS_INTERVAL_S:
            self.report()

    def report(self) -> None:
        if self._callback is not None:
            self._last = time.monotonic()
            self._callback(self._tally.progress())


def percentile(ordered: list[float], share: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]
