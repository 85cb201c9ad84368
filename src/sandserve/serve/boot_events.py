"""What a caller hears while an endpoint boots (the library never prints), and the boot's phase clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sandserve.results import BootPhase
from sandserve.serve.receipt import BootReceipt
from sandserve.spec import ServeSpec


class BootEvents:
    """Callbacks for what happens during boot. The library never prints; the CLI overrides these."""

    def status(self, message: str) -> None:
        """A step of the pipeline starts (``creating sandbox``, ``waiting for the server``...)."""

    def log(self, text: str) -> None:
        """New text from the server's start-up log."""

    def phase(self, name: str, seconds: float) -> None:
        """A boot phase completed, ``seconds`` after ``up`` started."""

    def build_progress(self, done: int, total: int, message: str) -> None:
        """The local engine is being built (first run only)."""

    def warning(self, message: str) -> None:
        """Something worth knowing that does not stop the boot (a check that could not be made)."""

    def confirm(self, spec: ServeSpec) -> None:
        """Last word before anything is created (or paid for): raise to stop here."""

    def receipt(self, receipt: BootReceipt, previous: BootReceipt | None) -> None:
        """The boot is done: each step's time, and the last boot of the same spec (None: the first)."""


@dataclass
class BootTimeline:
    started: float = field(default_factory=time.monotonic)
    phases: list[BootPhase] = field(default_factory=list)

    def mark(self, name: str, events: BootEvents) -> None:
        if any(seen.phase == name for seen in self.phases):
            return
        seconds = round(time.monotonic() - self.started, 2)
        self.phases.append(BootPhase(name, seconds))
        events.phase(name, seconds)
