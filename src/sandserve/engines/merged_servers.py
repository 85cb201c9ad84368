"""The adapter's two llama-servers (the people's and the batch's: batch_server.py) as one endpoint: their
``/metrics`` and ``/slots`` answered together, so that ``top``, the benchmarks and the autoscaler see the
endpoint's whole load. Metric names and meanings: llama.cpp's tools/server/README.md ("Available metrics").
"""

from __future__ import annotations

from typing import Any

#: Gauges that are averages since the server started: recomputed from the summed counters they average.
_AVERAGES = {
    "llamacpp:prompt_tokens_seconds": ("llamacpp:prompt_tokens_total", "llamacpp:prompt_seconds_total"),
    "llamacpp:predicted_tokens_seconds": (
        "llamacpp:tokens_predicted_total",
        "llamacpp:tokens_predicted_seconds_total",
    ),
}
#: A gauge averaged over decode calls: weighted by each server's count of them.
_PER_DECODE = ("llamacpp:n_busy_slots_per_decode", "llamacpp:n_decode_total")
#: A high-water mark: the larger of the two.
_HIGHEST = frozenset({"llamacpp:n_tokens_max"})


def _samples(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def merged_metrics(first: str, second: str) -> str:
    """Two llama-servers' Prometheus text as one: counters and gauges summed, a high-water mark the
    highest, averages recomputed. Lines and their order are the first's; a sample only the second has is
    added after them."""
    ours, theirs = _samples(first), _samples(second)
    merged = {name: value + theirs.get(name, 0.0) for name, value in ours.items()}
    for name in _HIGHEST & merged.keys():
        merged[name] = max(ours[name], theirs.get(name, ours[name]))
    for name, (tokens, seconds) in _AVERAGES.items():
        if name in merged and merged.get(seconds):
            merged[name] = merged[tokens] / merged[seconds]
    busy, decodes = _PER_DECODE
    if busy in merged and merged.get(decodes):
        weighted = ours.get(busy, 0.0) * ours.get(decodes, 0.0)
        weighted += theirs.get(busy, 0.0) * theirs.get(decodes, 0.0)
        merged[busy] = weighted / merged[decodes]
    lines = []
    for line in first.rstrip("\n").splitlines():
        name, _, _ = line.rpartition(" ")
        if line and not line.startswith("#") and name in merged:
            line = f"{name} {merged[name]:g}"
        lines.append(line)
    lines.extend(f"{name} {value:g}" for name, value in theirs.items() if name not in ours)
    return "\n".join(lines) + "\n"


def merged_slots(first: Any, second: Any) -> Any:
    """Two llama-servers' ``/slots`` lists as one: the second's slots numbered after the first's."""
    if not isinstance(first, list) or not isinstance(second, list):
        return first
    offset = len(first)
    renumbered = []
    for slot in second:
        if isinstance(slot, dict) and isinstance(slot.get("id"), int):
            slot = {**slot, "id": slot["id"] + offset}
        renumbered.append(slot)
    return [*first, *renumbered]
