"""Why a serving endpoint is not whole: a fleet whose autoscaler is dead or being restarted
(``Record.degraded``, shown as the state ``degraded`` by ``ls``, ``status``, ``fleet status`` and ``top``)."""

from __future__ import annotations

import time

from sandserve.errors import SandserveError
from sandserve.providers import get_provider
from sandserve.providers.handles import ScalerHandle
from sandserve.serve.ledger import Record, Registry


def scaler_trouble(record: Record, registry: Registry) -> str | None:
    """Why a serving fleet is degraded: its autoscaler is being restarted after it died, or is dead (then
    nothing adds, replaces or holds workers); None for anything else."""
    scalers = [r for r in registry.members_of(record.id) if isinstance(r.sandbox, ScalerHandle)]
    if not scalers:
        return None
    scaler = max(scalers, key=lambda r: r.created_at)
    assert isinstance(scaler.sandbox, ScalerHandle)
    restarting = scaler.sandbox.state.get("restarting")
    try:
        running = get_provider(scaler.provider).is_running(scaler.sandbox)
    except SandserveError:
        return None
    if not running:
        return (
            f"its autoscaler {scaler.id} is not running: no worker is added, replaced or held for "
            f"(`sandserve fleet scale {record.id} --min N` starts a new one)"
        )
    if isinstance(restarting, dict):
        starts = time.strftime("%H:%M:%S", time.localtime(restarting["at"] + restarting["delay_s"]))
        return f"its autoscaler {restarting['reason']}: a new one starts at {starts}"
    return None
