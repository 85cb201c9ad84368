"""A boot receipt: how long each step of one boot took, warm or cold, and how it compares with the last boot
of the same spec. Built from the boot's timeline (the moments each phase was seen in the server's log)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandserve.results import BootPhase

#: Lifecycle's own timeline marks, and the step each one ends.
PIPELINE_STEPS = {"sandbox ready": "create", "ready": "first generation"}
#: Steps in the order a boot goes through them (an engine's other steps follow in the order seen).
STEP_ORDER = ("create", "start", "weights", "load", "compile", "graphs", "warm-up", "first generation")


@dataclass(frozen=True)
class BootReceipt:
    origin: str
    """``warm`` (from a golden snapshot) or ``cold`` (from the image)."""
    why: str
    """The snapshot it came from, or why there was none."""
    steps: tuple[BootPhase, ...]
    """Each step and the seconds it took, in boot order."""
    gpu_type: str | None = None
    restored: frozenset[str] = frozenset()
    """Steps whose output the sandbox held before the server started (``weights``: no download;
    ``compile``: the kernel caches, no compile)."""
    endpoint_id: str | None = field(default=None, compare=False)

    @property
    def total(self) -> float:
        return round(sum(step.seconds for step in self.steps), 2)

    def seconds(self, step: str) -> float | None:
        return next((s.seconds for s in self.steps if s.phase == step), None)

    def slowest(self) -> str | None:
        """The step that took longest, named with its cause where the cause is known."""
        if not self.steps:
            return None
        step = max(self.steps, key=lambda s: s.seconds)
        took = seconds_text(step.seconds)
        missing = step.phase not in self.restored
        causes = {
            ("compile", True): f"kernel caches missing: compiled for {took}",
            ("compile", False): f"compile took {took} with the kernel caches restored",
            ("weights", True): f"weights not in the sandbox: downloaded for {took}",
            ("weights", False): f"weights found on disk, yet {took}",
        }
        if step.phase == "create":
            source = "the snapshot" if self.origin == "warm" else "the image"
            return f"sandbox created from {source}: {took}"
        return causes.get((step.phase, missing), f"{step.phase}: {took}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "why": self.why,
            "gpu_type": self.gpu_type,
            "restored": sorted(self.restored),
            "steps": [{"step": s.phase, "seconds": s.seconds} for s in self.steps],
            "total_seconds": self.total,
            "slowest": self.slowest(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], endpoint_id: str | None = None) -> BootReceipt:
        steps = tuple(BootPhase(str(s["step"]), float(s["seconds"])) for s in data.get("steps", ()))
        return cls(
            origin=str(data.get("origin", "cold")),
            why=str(data.get("why", "")),
            steps=steps,
            gpu_type=data.get("gpu_type"),
            restored=frozenset(data.get("restored") or ()),
            endpoint_id=endpoint_id,
        )


def receipt_from(
    marks: Sequence[BootPhase],
    engine_steps: Mapping[str, str],
    *,
    origin: str,
    why: str,
    gpu_type: str | None = None,
    restored: frozenset[str] = frozenset(),
) -> BootReceipt:
    """Steps from the timeline's marks (seconds since `up` started): a step lasts from the previous mark to
    the mark that ends it; a step of several marks adds them up."""
    spent: dict[str, float] = {}
    before = 0.0
    for mark in sorted(marks, key=lambda m: m.seconds):
        step = PIPELINE_STEPS.get(mark.phase) or engine_steps.get(mark.phase) or mark.phase
        spent[step] = spent.get(step, 0.0) + max(0.0, mark.seconds - before)
        before = max(before, mark.seconds)
    ordered = sorted(spent, key=lambda s: STEP_ORDER.index(s) if s in STEP_ORDER else len(STEP_ORDER))
    steps = tuple(BootPhase(step, round(spent[step], 2)) for step in ordered)
    return BootReceipt(origin=origin, why=why, steps=steps, gpu_type=gpu_type, restored=restored)


def differences(receipt: BootReceipt, previous: BootReceipt | None) -> dict[str, float]:
    """Seconds each step took more (+) or less (-) than in the previous boot, and ``total``."""
    if previous is None:
        return {}
    changes = {
        step.phase: round(step.seconds - (previous.seconds(step.phase) or 0.0), 2) for step in receipt.steps
    }
    for step in previous.steps:  # a step the new boot skipped entirely
        changes.setdefault(step.phase, round(-step.seconds, 2))
    changes["total"] = round(receipt.total - previous.total, 2)
    return changes


def seconds_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
