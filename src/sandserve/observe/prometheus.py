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


#: Labels that tell apart replicas of one scheduler's figures: tensor/pipeline-parallel ranks report the same
#: requests and the same pool, so their values are not added up.
_REPLICA_LABELS = frozenset({"tp_rank", "pp_rank", "attn_tp_rank", "moe_ep_rank"})


def _per_rank(samples: dict[str, list[Sample]], name: str) -> list[float]:
    """One value per distinct series once replica labels are set aside (the largest replica is kept).

    With priority scheduling SGLang's queue gauges carry the total under ``priority=""`` beside one series
    per priority (metrics_collector.py ``_log_gauge_queue_count``): the per-priority series are then left out,
    so nothing is counted twice."""
    series: dict[tuple[tuple[str, str], ...], float] = {}
    found = samples.get(name, [])
    if any(s.labels.get("priority") == "" for s in found) and any(s.labels.get("priority") for s in found):
        found = [s for s in found if s.labels.get("priority") == ""]
    for sample in found:
        if math.isnan(sample.value) or math.isinf(sample.value):
            continue
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in _REPLICA_LABELS))
        series[key] = max(series.get(key, sample.value), sample.value)
    return list(series.values())


def total(samples: dict[str, list[Sample]], *names: str) -> float | None:
    """The sum over series (DP ranks, label sets) of the first of ``names`` present."""
    for name in names:
        values = _per_rank(samples, name)
        if values:
            return sum(values)
    return None


def mean(samples: dict[str, list[Sample]], *names: str) -> float | None:
    """The mean over series (DP ranks) of the first of ``names`` present (ratios such as token usage)."""
    for name in names:
        values = _per_rank(samples, name)
        if values:
            return sum(values) / len(values)
    return None
