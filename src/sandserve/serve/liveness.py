"""Whether what the ledger lists still runs, asked of its provider; and rows left ``booting`` by an ``up``
that was killed, settled. Apart from the pipeline (``lifecycle``): `ls` and `status` load only this."""

from __future__ import annotations

from sandserve.errors import SandserveError
from sandserve.providers import get_provider
from sandserve.serve.degraded import scaler_trouble
from sandserve.serve.ledger import Record, Registry, State


def refresh(record: Record, registry: Registry | None = None) -> Record:
    """Ask the provider whether the endpoint's server still runs (``record.live``). With the ``registry``, a
    row left ``booting`` by an ``up`` that was killed is settled first (``reconcile``)."""
    if registry is not None:
        record = reconcile(record, registry)
    if record.state is State.DOWN or not record.sandbox.sandbox_id:
        record.live = False
        return record
    try:
        record.live = get_provider(record.provider).is_running(record.sandbox)
    except SandserveError:
        record.live = None
    if registry is not None and record.live:
        record.degraded = scaler_trouble(record, registry)
    return record


def boot_owner_alive(record: Record) -> bool:
    """Whether the process that ran ``up`` for this row still runs (pid and start time both match)."""
    if record.owner_pid is None:
        return False
    from sandserve.providers.local import process_start_time

    return process_start_time(record.owner_pid) == record.owner_started


def reconcile(record: Record, registry: Registry) -> Record:
    """Settle a row left ``booting`` by an ``up`` that no longer runs: a server still running with its
    endpoint recorded becomes ready; anything else is stopped (if it runs) and marked down."""
    if record.state is not State.BOOTING or boot_owner_alive(record):
        return record
    provider = get_provider(record.provider)
    try:
        alive = bool(record.sandbox.sandbox_id) and provider.is_running(record.sandbox)
    except SandserveError:
        return record  # the provider cannot say now: settle it another time
    if alive and record.endpoint is not None:
        registry.update(
            record.id, state=State.READY, error="its `up` was interrupted after the server started"
        )
    else:
        # Nothing usable: whatever is left of the sandbox (a kept one bills) goes before the row says down.
        if record.sandbox.sandbox_id:
            try:
                provider.delete(record.sandbox)
            except SandserveError:
                return record  # still there and not deletable now: settle it another time
        registry.update(record.id, state=State.DOWN, error="its `up` ended before the server was ready")
    return registry.get(record.id)
