"""The autoscaler's rule: from the workers' own loads to one decision (add, remove, or hold), with its reason.

Pure: no process, no clock of its own (``now`` is passed in), so every rule is tested without a server. The
signal is the engines' own queue (requests waiting for a slot), the one that works for LLM servers: a fleet
grows once requests stay queued for ``up_delay`` seconds, and shrinks once it has been idle (nothing running,
nothing queued, nothing held) for ``down_delay`` seconds. It never removes the last worker while anything is
queued or held, and it adds no worker while a provider's refusal (quota, capacity) is being backed off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from sandserve.errors import ConfigError
from sandserve.fleet.loads import WorkerLoad

Action = Literal["up", "down", "replace", "none"]


@dataclass
class ScalerSettings:
    min_workers: int = 1
    max_workers: int = 4
    #: Queued requests per serving worker (averaged) at or above which the fleet is short of workers.
    queue_per_worker: float = 1.0
    #: Seconds the fleet must stay short of workers before one is added.
    up_delay: float = 30.0
    #: Seconds the fleet must stay idle before a worker is removed (the last one too, with min_workers 0).
    down_delay: float = 300.0
    #: Seconds between two looks at the loads.
    interval: float = 2.0
    #: Seconds a refused worker boot (quota, capacity) blocks the next one.
    backoff: float = 120.0
    #: With no worker up: how many requests are held while one boots, and for how long each at most.
    hold_capacity: int = 256
    hold_timeout: float = 600.0
    #: Seconds a worker being removed may take to finish its in-flight requests.
    drain_timeout: float = 600.0
    #: Seconds before a dead autoscaler is started again (doubled after each quick death, up to a minute).
    restart_backoff: float = 1.0

    def check(self) -> None:
        if self.min_workers < 0:
            raise ConfigError(
                f"--min must be 0 or more, not {self.min_workers}.", hint="Pass --min 0 or more."
            )
        if self.max_workers < max(self.min_workers, 1):
            raise ConfigError(
                f"--max ({self.max_workers}) must be at least --min ({self.min_workers}) and at least 1.",
                hint="Raise --max or lower --min.",
            )
        for name in ("queue_per_worker", "interval", "hold_timeout", "drain_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"The autoscaler's {name} must be above 0.", hint=f"Pass a positive {name}."
                )
        for name in ("up_delay", "down_delay", "backoff", "restart_backoff"):
            if getattr(self, name) < 0:
                raise ConfigError(f"The autoscaler's {name} cannot be negative.", hint=f"Pass {name} >= 0.")
        if self.hold_capacity < 1:
            raise ConfigError("hold_capacity must be at least 1.", hint="Pass hold_capacity 1 or more.")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScalerSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    worker: str | None = None
    """The worker to remove or replace (its endpoint id)."""


@dataclass
class FleetLoad:
    """What the scaler sees at one look: loads per serving worker (None: it did not answer), dead workers,
    boots and drains under way, and requests held while no worker is up."""

    loads: dict[str, WorkerLoad | None]
    dead: list[str] = field(default_factory=list)
    booting: int = 0
    draining: int = 0
    held: int = 0
    boot_seconds: float | None = None
    """How long a new worker takes to boot, measured (its spec's last boot receipt); None: not known yet."""

    @property
    def queued(self) -> int:
        return self.held + sum(load.queued for load in self.loads.values() if load)

    @property
    def running(self) -> int:
        return sum(load.running for load in self.loads.values() if load)

    @property
    def idle(self) -> bool:
        """Nothing running, queued or held anywhere, and every worker answered (an unknown load is not
        idle)."""
        return (
            self.queued == 0 and self.running == 0 and all(load is not None for load in self.loads.values())
        )


class ScaleRule:
    """Decides one step at a time; remembers since when the fleet has been short of workers, or idle."""

    def __init__(self, settings: ScalerSettings) -> None:
        self.settings = settings
        self.short_since: float | None = None
        self.idle_since: float | None = None
        self.backoff_until: float | None = None
        self.backoff_reason: str | None = None

    def back_off(self, now: float, reason: str) -> None:
        self.backoff_until = now + self.settings.backoff
        self.backoff_reason = reason

    def backing_off(self, now: float) -> bool:
        if self.backoff_until is not None and now >= self.backoff_until:
            self.backoff_until = self.backoff_reason = None
        return self.backoff_until is not None

    def decide(self, now: float, seen: FleetLoad) -> Decision:
        s = self.settings
        if seen.dead:
            return Decision("replace", f"worker {seen.dead[0]} is not running any more", seen.dead[0])
        serving = len(seen.loads)
        planned = serving + seen.booting
        per_worker = seen.queued / max(serving, 1)
        short = (seen.held > 0 and planned == 0) or per_worker >= s.queue_per_worker
        if not short:
            self.short_since = None
        elif self.short_since is None:
            self.short_since = now
        if not (seen.idle and seen.booting == 0):
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now

        short_for = now - self.short_since if self.short_since is not None else 0.0
        # Never wait longer to react than a worker takes to boot: past that, the delay and not the boot is
        # what keeps the queue waiting (and a worker added in vain costs one boot to undo).
        boot = seen.boot_seconds
        up_delay = min(s.up_delay, boot) if boot is not None else s.up_delay
        ready_in = f"; a worker boots in about {boot:.0f} s (measured)" if boot is not None else ""
        wants_up: str | None = None
        if planned < s.min_workers:
            wants_up = f"{planned} worker(s) up or booting, below --min {s.min_workers}"
        elif planned == 0 and seen.held > 0:
            wants_up = f"{seen.held} request(s) waiting and no worker up"
        elif short and seen.booting == 0 and planned < s.max_workers and short_for >= up_delay:
            wants_up = (
                f"{seen.queued} request(s) queued on {serving} worker(s) "
                f"(>= {s.queue_per_worker:g} per worker) for {short_for:.0f} s"
            )
        if wants_up:
            wants_up += ready_in
            if self.backing_off(now):
                return Decision(
                    "none", f"would add a worker ({wants_up}) but backing off: {self.backoff_reason}"
                )
            return Decision("up", wants_up)

        if planned > s.max_workers and serving > 0 and seen.draining == 0:
            return Decision("down", f"{planned} worker(s), above --max {s.max_workers}", _least_busy(seen))
        idle_for = now - self.idle_since if self.idle_since is not None else 0.0
        # A worker idle for less time than it takes to boot again is kept: removing it would cost more.
        down_delay = max(s.down_delay, boot) if boot is not None else s.down_delay
        if (
            serving > s.min_workers
            and seen.draining == 0
            and self.idle_since is not None
            and idle_for >= down_delay
        ):
            self.idle_since = now  # one worker per idle period
            return Decision(
                "down", f"idle (nothing running or queued) for {idle_for:.0f} s{ready_in}", _least_busy(seen)
            )
        if short and planned >= s.max_workers:
            return Decision(
                "none",
                f"{seen.queued} request(s) queued; {planned} worker(s) up or booting, --max {s.max_workers}",
            )
        return Decision("none", "within bounds")


def _least_busy(seen: FleetLoad) -> str:
    """The worker with the least work in hand (the newest among equals: its cache holds the least)."""
    order = list(seen.loads)
    return min(
        order,
        key=lambda wid: (
            (seen.loads[wid].running + seen.loads[wid].queued) if seen.loads[wid] else 10**9,  # type: ignore[union-attr]
            -order.index(wid),
        ),
    )
