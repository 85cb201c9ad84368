"""The Prometheus text exposition format, as far as reading a server's own gauges and counters needs it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> dict[str, list[Sample]]:
    """Every sample in ``text`` by metric name; comments, blank and malformed lines are skipped."""
    samples: dict[str, list[Sample]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, _, label_text, raw_value, _ = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = dict(_LABEL.findall(label_text or ""))
        samples.setdefault(name, []).append(Sample(name, labels, value))
    return samples


def _per_rank(samples: dict[str, list[Sample]], name: str) -> list[float]:
    """One value per data-parallel rank: the tensor-parallel ranks of one DP rank report the same scheduler,
    so they are not added up (the largest is kept)."""
    ranks: dict[str, float] = {}
    for sample in samples.get(name, ()):
        if math.isnan(sample.value) or math.isinf(sample.value):
            continue
        rank = sample.labels.get("dp_rank", "0")
        ranks[rank] = max(ranks.get(rank, sample.value), sample.value)
    return list(ranks.values())


def total(samples: dict[str, list[Sample]], *names: str) -> float | None:
    """The sum over DP ranks of the first of ``names`` present (counters, request counts)."""
    for name in names:
        values = _per_rank(samples, name)
        if values:
            return sum(values)
    return None


def mean(samples: dict[str, list[Sample]], *names: str) -> float | None:
    """The mean over DP ranks of the first of ``names`` present (ratios such as token usage)."""
    for name in names:
        values = _per_rank(samples, name)
        if values:
            return sum(values) / len(values)
    return None
