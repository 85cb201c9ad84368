"""Fleets: many endpoints behind the model gateway, used as one endpoint, sized by an autoscaler.

model (what a fleet is) · gateway (its process and admin API) · members (workers and ledger rows) ·
verbs (up, add, remove, scale, down, status) · loads (engines' own load endpoints) · autoscale (the rule) ·
drain · hold (requests at zero workers) · scaler_row / scaler_process (the autoscaler's process).
"""

from sandserve.fleet.autoscale import ScalerSettings
from sandserve.fleet.model import (
    DEFAULT_GATEWAY,
    DEFAULT_POLICY,
    GATEWAYS,
    POLICIES,
    Fleet,
    FleetStatus,
    Member,
    WorkerStatus,
)
from sandserve.fleet.verbs import (
    add_worker,
    fleet_down,
    fleet_status,
    fleet_up,
    load_fleet,
    remove_worker,
    scale_fleet,
)

__all__ = [
    "DEFAULT_GATEWAY",
    "DEFAULT_POLICY",
    "GATEWAYS",
    "POLICIES",
    "Fleet",
    "FleetStatus",
    "Member",
    "ScalerSettings",
    "WorkerStatus",
    "add_worker",
    "fleet_down",
    "fleet_status",
    "fleet_up",
    "load_fleet",
    "remove_worker",
    "scale_fleet",
]
