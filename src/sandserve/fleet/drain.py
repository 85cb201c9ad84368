"""Taking a worker out of a fleet without losing a request: deregister, let in-flight requests finish, then
down."""

from __future__ import annotations

import time

from sandserve.errors import EndpointNotFoundError
from sandserve.fleet import gateway as gw
from sandserve.fleet.loads import read_load
from sandserve.fleet.members import change_members
from sandserve.fleet.model import Fleet, Member
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry, State

DRAIN_TIMEOUT = 600.0
DRAIN_POLL_SECONDS = 0.25
#: Looks in a row that must find the worker idle: a request the gateway had just sent may not be counted yet.
IDLE_LOOKS = 3


def drain_and_remove(
    fleet: Fleet, member: Member, registry: Registry, *, timeout: float = DRAIN_TIMEOUT
) -> bool:
    """Deregister ``member`` (no new request is routed to it), wait until its engine reports nothing running
    or queued (or ``timeout``), then take it down. Returns whether it drained (False: timed out or already
    dead)."""
    with gw.admin_client(fleet.url, fleet.endpoint.api_key) as admin:
        gw.deregister(admin, fleet.gateway, member)
    change_members(registry, fleet.id, remove=member)
    try:
        record = registry.get(member.endpoint_id)
    except EndpointNotFoundError:
        return False
    drained = wait_until_idle(registry, member.endpoint_id, timeout)
    record = registry.get(member.endpoint_id)
    if record.state is not State.DOWN:
        lifecycle.down(record, registry)
    return drained


def wait_until_idle(registry: Registry, endpoint_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    idle_looks = 0
    while time.monotonic() < deadline:
        record = lifecycle.refresh(registry.get(endpoint_id))
        if not record.live or record.endpoint is None:
            return False
        load = read_load(record.endpoint)
        idle_looks = idle_looks + 1 if load is not None and not load.busy else 0
        if idle_looks >= IDLE_LOOKS:
            return True
        time.sleep(DRAIN_POLL_SECONDS)
    return False
