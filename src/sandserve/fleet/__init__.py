"""Fleets: many endpoints behind the model gateway, used as one endpoint."""

from sandserve.fleet.core import (
    DEFAULT_POLICY,
    POLICIES,
    Fleet,
    FleetStatus,
    Member,
    WorkerStatus,
    add_worker,
    fleet_down,
    fleet_status,
    fleet_up,
    load_fleet,
    remove_worker,
)

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "Fleet",
    "FleetStatus",
    "Member",
    "WorkerStatus",
    "add_worker",
    "fleet_down",
    "fleet_status",
    "fleet_up",
    "load_fleet",
    "remove_worker",
]
