"""The autoscaler's row in the ledger: starting and stopping its process, its settings, what it last decided.

The row (provider ``fleet-scaler``, id ``scaler-<fleet>``) carries the fleet's label, so ``sandserve down
FLEET`` and ``down --all`` stop it with the fleet. ``settings`` are written by ``fleet up`` / ``fleet scale``
and re-read by the process at every look; ``state`` is written by the process only (decisions, back-off, cold
starts).
"""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any

from sandserve.engines.base import Launch
from sandserve.errors import FleetNotFoundError, GatewayError
from sandserve.fleet.autoscale import ScalerSettings
from sandserve.paths import logs_dir
from sandserve.providers import get_provider
from sandserve.providers.gateway import SCALER_PROVIDER
from sandserve.providers.handles import GatewayHandle, ScalerHandle
from sandserve.serve import lifecycle
from sandserve.serve.ledger import FLEET_LABEL, Record, Registry, State

SCALER_START_TIMEOUT = 30.0


def new_scaler_id(fleet_id: str) -> str:
    return f"scaler-{fleet_id.removeprefix('fleet-')}-{secrets.token_hex(2)}"


def scaler_record(fleet_id: str, registry: Registry) -> Record | None:
    """The fleet's newest scaler row (a scaler restarted by ``fleet scale`` gets a new row)."""
    rows = [r for r in registry.members_of(fleet_id, include_down=True) if r.provider == SCALER_PROVIDER]
    return max(rows, key=lambda r: r.created_at) if rows else None


def scaler_handle(record: Record) -> ScalerHandle:
    """A scaler row's handle: its process, its settings and its state."""
    if not isinstance(record.sandbox, ScalerHandle):
        raise FleetNotFoundError(record.id, reason=f"{record.id} is not a fleet's autoscaler.")
    return record.sandbox


def start_scaler(fleet_id: str, settings: ScalerSettings, registry: Registry) -> ScalerHandle:
    """Record the scaler's row, start its detached process, and wait until it has looked at the fleet once."""
    row_id = new_scaler_id(fleet_id)
    fleet = registry.get(fleet_id)
    log_path = logs_dir() / f"{row_id}.log"
    handle = ScalerHandle(SCALER_PROVIDER, row_id, log_path=str(log_path), settings=settings.as_dict())
    registry.add(
        row_id,
        provider=SCALER_PROVIDER,
        engine=fleet.engine,
        model=fleet.model,
        spec={**fleet.spec, "labels": {**fleet.spec.get("labels", {}), FLEET_LABEL: fleet_id}},
        sandbox=handle,
    )
    # The ledger's path too: a fleet brought up on another ledger than the default is scaled from that one.
    argv = [sys.executable, "-m", "sandserve.fleet.scaler_process", fleet_id, row_id, str(registry.path)]
    launch = Launch(argv=argv, env={})
    get_provider(SCALER_PROVIDER).start(handle, launch)
    registry.update(row_id, sandbox=handle, log_path=log_path)
    deadline = time.monotonic() + SCALER_START_TIMEOUT
    while not scaler_handle(registry.get(row_id)).state.get("updated"):
        if not get_provider(SCALER_PROVIDER).is_running(handle) or time.monotonic() > deadline:
            tail = (
                "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                if log_path.exists()
                else ""
            )
            raise GatewayError(
                f"The autoscaler of fleet {fleet_id} did not start:\n{tail}", log_path=log_path
            )
        time.sleep(0.1)
    registry.update(row_id, state=State.READY)
    return handle


def stop_scaler(fleet_id: str, registry: Registry) -> None:
    record = scaler_record(fleet_id, registry)
    if record is not None and record.state is not State.DOWN:
        lifecycle.down(record, registry)


def read_settings(row_id: str, registry: Registry) -> ScalerSettings:
    return ScalerSettings.from_dict(scaler_handle(registry.get(row_id)).settings)


def write_state(row_id: str, registry: Registry, state: dict[str, Any]) -> None:
    """The process's own part of the row (read, then written: settings may have changed meanwhile)."""
    handle = scaler_handle(registry.get(row_id))
    handle.state = state
    registry.update(row_id, sandbox=handle)


def update_scaler_settings(
    fleet_id: str,
    registry: Registry,
    *,
    min_workers: int | None = None,
    max_workers: int | None = None,
    **changes: Any,
) -> ScalerSettings:
    """New bounds for a serving fleet: the running scaler picks them up at its next look; with no scaler (or a
    dead one) a new one is started."""
    record = scaler_record(fleet_id, registry)
    current = ScalerSettings.from_dict(scaler_handle(record).settings) if record else None
    if current is None:
        gateway = registry.get(fleet_id).sandbox
        members = len(gateway.members) if isinstance(gateway, GatewayHandle) else 0
        current = ScalerSettings(min_workers=members, max_workers=max(members, 1))
    if min_workers is not None:
        changes["min_workers"] = min_workers
    if max_workers is not None:
        changes["max_workers"] = max_workers
    settings = ScalerSettings.from_dict({**current.as_dict(), **changes})
    settings.check()
    alive = record is not None and lifecycle.refresh(record).live and record.state is not State.DOWN
    if record is not None and alive:
        handle = scaler_handle(record)
        handle.settings = settings.as_dict()
        registry.update(record.id, sandbox=handle)
    else:
        if record is not None:
            stop_scaler(fleet_id, registry)
        start_scaler(fleet_id, settings, registry)
    return settings


def scaler_summary(fleet_id: str, registry: Registry) -> dict[str, Any] | None:
    """What ``fleet status`` shows of the scaler: bounds, whether it runs, back-off, cold starts,
    decisions."""
    record = scaler_record(fleet_id, registry)
    if record is None:
        return None
    record = lifecycle.refresh(record)
    handle = scaler_handle(record)
    return {
        "id": record.id,
        "running": bool(record.live),
        "state": record.shown_state,
        "log_path": record.log_path,
        "settings": handle.settings,
        **handle.state,
    }
