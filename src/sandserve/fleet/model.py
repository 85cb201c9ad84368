"""What a fleet is: its policy, its members, the one endpoint clients use, and how it looks from outside."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from sandserve.endpoint import Endpoint, EndpointStatus
from sandserve.errors import FleetNotFoundError
from sandserve.fleet.scaler_row import stop_scaler
from sandserve.providers.handles import GatewayHandle
from sandserve.providers.handles import Member as Member  # the fleet's vocabulary: imported from here
from sandserve.serve.ledger import Record, Registry, ledger_of

Policy = Literal["cache_aware", "round_robin", "random", "power_of_two"]
POLICIES: tuple[str, ...] = get_args(Policy)
DEFAULT_POLICY: Policy = "cache_aware"

GatewayName = Literal["sglang-router", "smg"]
GATEWAYS: tuple[str, ...] = get_args(GatewayName)
#: sglang-router stays the default: smg 1.13.0 sends a worker the CLIENT's Authorization header instead of the
#: worker's own key (model_gateway/src/routers/http/router.rs), so behind smg every worker must accept the
#: gateway's key: one key for the whole fleet instead of a key per worker.
DEFAULT_GATEWAY: GatewayName = "sglang-router"
KEY_PASSING_GATEWAYS = frozenset({"smg"})
#: Gateways that route Anthropic Messages (/v1/messages): smg 1.13 does; sglang-router 0.3.2 answers 404 (both
#: route /v1/responses). A fleet an Anthropic client or Claude Code talks to needs ``--gateway smg``.
MESSAGES_GATEWAYS = frozenset({"smg"})


@dataclass
class Fleet:
    id: str
    policy: str
    endpoint: Endpoint
    """The ONE endpoint clients use (the gateway's URL and key), like any other: ``.openai()``..."""
    members: list[Member]
    gateway: GatewayHandle
    """The gateway process: pid, start time, port, log path (and the members, as stored in the ledger)."""

    @property
    def url(self) -> str:
        return self.endpoint.url

    # --- the served thing, as for an Endpoint: status, logs, down ------------------------------------------

    def status(self) -> EndpointStatus:
        """The gateway's state as the ledger and its process say (ready, dead, down); every worker's, as the
        gateway and the engines see them: ``fleet_status(fleet.id)``."""
        return self.endpoint.status()

    def logs(self) -> str:
        """The gateway's whole log so far (each worker's: ``sandserve logs WORKER_ID``)."""
        return self.endpoint.logs()

    def down(self) -> None:
        """Stop the autoscaler (so it starts nothing more), then the gateway and every worker."""
        stop_scaler(self.id, self.ledger)
        self.endpoint.down()

    @property
    def ledger(self) -> Registry:
        """The ledger this fleet came from (its endpoint carries it)."""
        return ledger_of(self.endpoint)

    @property
    def gateway_name(self) -> str:
        return self.gateway.gateway or DEFAULT_GATEWAY

    @classmethod
    def from_record(cls, record: Record) -> Fleet:
        if record.endpoint is None:
            raise FleetNotFoundError(
                record.id, reason=f"Fleet {record.id} is {record.shown_state}, not ready."
            )
        handle = gateway_handle(record)
        return cls(
            id=record.id,
            policy=handle.policy or DEFAULT_POLICY,
            endpoint=record.endpoint,
            members=list(handle.members),
            gateway=handle,
        )


def gateway_handle(record: Record) -> GatewayHandle:
    """A fleet's row's handle: its gateway process and its members."""
    if not isinstance(record.sandbox, GatewayHandle):
        raise FleetNotFoundError(record.id, reason=f"{record.id} is an endpoint, not a fleet.")
    return record.sandbox


@dataclass(frozen=True)
class WorkerStatus:
    worker_id: str | None
    url: str
    endpoint_id: str | None
    """None for a worker the gateway lists that this fleet did not register."""
    healthy: bool | None
    """As the gateway sees it (its own health checks); None when the gateway does not list it or is down."""
    load: int | None
    running: bool | None
    """Whether the worker's server still runs, as its provider sees it; None for an unknown worker."""
    requests_running: int | None = None
    """Requests the engine is generating for, from its own load endpoint; None when it did not answer."""
    requests_queued: int | None = None
    """Requests the engine holds back (queued or deferred), from its own load endpoint."""
    cache_hit_rate: float | None = None
    """Cached prompt tokens / prompt tokens since the worker started."""
    boot: str | None = None
    """How it booted: ``warm 12 s`` or ``cold 293 s`` (its boot receipt); None: no receipt."""


@dataclass(frozen=True)
class FleetStatus:
    id: str
    state: str
    url: str | None
    policy: str
    gateway_running: bool
    workers: list[WorkerStatus]
    log_path: str | None
    gateway: str = DEFAULT_GATEWAY
    scaler: dict[str, Any] | None = field(default=None)
    """The autoscaler's bounds, whether it runs, its back-off, cold starts and last decisions (None: no
    scaler)."""
    degraded: str | None = None
    """Why the fleet serves but is not whole (its autoscaler died); None when it is."""
