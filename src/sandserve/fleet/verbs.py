"""The fleet verbs: up, add, remove (drained first), scale, down, status."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sandserve.errors import (
    BootInterruptedError,
    ConfigError,
    FleetBootError,
    PortInUseError,
    SandserveError,
)
from sandserve.fleet import gateway as gw
from sandserve.fleet import members as fm
from sandserve.fleet.autoscale import ScalerSettings
from sandserve.fleet.drain import drain_and_remove
from sandserve.fleet.loads import read_load
from sandserve.fleet.model import (
    DEFAULT_GATEWAY,
    DEFAULT_POLICY,
    KEY_PASSING_GATEWAYS,
    POLICIES,
    Fleet,
    FleetStatus,
    Member,
    WorkerStatus,
    gateway_handle,
)
from sandserve.fleet.scaler_row import scaler_summary, start_scaler, stop_scaler, update_scaler_settings
from sandserve.providers import get_provider
from sandserve.providers.gateway import GATEWAY_PROVIDER
from sandserve.providers.handles import GatewayHandle
from sandserve.providers.local import HOST, port_is_free
from sandserve.serve import lifecycle
from sandserve.serve.boot_events import BootEvents
from sandserve.serve.ledger import Record, Registry, State
from sandserve.spec import ServeSpec


def fleet_up(
    spec: ServeSpec,
    workers: int,
    policy: str = DEFAULT_POLICY,
    *,
    public_gateway: bool = False,
    gateway_port: int | None = None,
    gateway_args: Sequence[str] = (),
    gateway: str = DEFAULT_GATEWAY,
    scaling: ScalerSettings | None = None,
    events: BootEvents | None = None,
    registry: Registry | None = None,
) -> Fleet:
    """Bring ``workers`` endpoints of ``spec`` up behind one gateway; return when it really generates.

    With ``scaling`` an autoscaler (a detached process with a ledger row of its own) then keeps the fleet
    between its bounds. Every worker is served in auth mode ``key`` with a key of its own. On any failure
    everything started is stopped (no gateway or worker is left running) and FleetBootError names the
    cause."""
    events = events or BootEvents()
    registry = registry or Registry()
    if scaling is not None:
        scaling.check()
        if policy == "power_of_two" and scaling.min_workers < 2:
            raise ConfigError(
                "power_of_two picks the less loaded of two workers: an autoscaled fleet needs --min 2 or "
                "more.",
                hint="Pass --min 2, or another --policy.",
            )
        workers = min(max(workers, scaling.min_workers, 1), scaling.max_workers)
    check_fleet_request(spec, workers, policy, gateway_port, gateway=gateway, public_gateway=public_gateway)
    if not get_provider(spec.provider).remote:
        # Every worker runs on this machine and keeps to its share of the cores (threads are set at launch, so
        # an autoscaled fleet plans for its largest size).
        sharing = scaling.max_workers if scaling else workers
        spec = replace(spec, resources=replace(spec.resources, servers_on_machine=sharing))
    fleet_id = f"fleet-{secrets.token_hex(3)}"
    registry.add(
        fleet_id,
        provider=GATEWAY_PROVIDER,
        engine=spec.engine,
        model=spec.served_name,
        spec=spec.to_record(),
        sandbox=GatewayHandle(GATEWAY_PROVIDER, fleet_id, policy=policy, gateway=gateway),
    )
    try:
        api_key = None if public_gateway else fm.new_key()
        shared = api_key if gateway in KEY_PASSING_GATEWAYS else None
        endpoints = fm.boot_workers(fleet_id, spec, workers, events, registry, shared)
        # power_of_two will not start without two workers on its command line (facts/gateway.md).
        startup_workers = endpoints if policy == "power_of_two" else []
        handle = gw.start_gateway(
            fleet_id, policy, api_key, gateway_port, startup_workers, gateway_args, events, registry, gateway
        )
        url = f"http://{HOST}:{handle.port}"
        with gw.admin_client(url, api_key) as admin:
            events.status(f"registering {len(endpoints)} worker(s) with the gateway ({policy})")
            if startup_workers:
                members = gw.adopt_startup_workers(admin, handle, endpoints)
            else:
                members = [gw.register_endpoint(admin, handle, endpoint) for endpoint in endpoints]
            events.status("waiting for a real generation through the gateway")
            gw.wait_until_generates(admin, handle, spec.served_name)
        endpoint = fm.fleet_endpoint(fleet_id, url, api_key, endpoints[0], policy)
        handle.members = members
        registry.update(fleet_id, state=State.READY, endpoint=endpoint, sandbox=handle)
        if scaling is not None:
            events.status(f"starting the autoscaler ({scaling.min_workers}..{scaling.max_workers} workers)")
            start_scaler(fleet_id, scaling, registry)
    except KeyboardInterrupt:
        fm.abandon(fleet_id, registry, "interrupted while booting")
        raise BootInterruptedError(endpoint_id=fleet_id, log_path=None) from None
    except SandserveError as exc:
        fm.abandon(fleet_id, registry, exc.message)
        raise FleetBootError(fleet_id=fleet_id, cause=exc) from exc
    except BaseException:
        fm.abandon(fleet_id, registry, "failed while booting")
        raise
    endpoint.ledger = registry
    return Fleet(id=fleet_id, policy=policy, endpoint=endpoint, members=members, gateway=handle)


def add_worker(
    fleet_ref: str | None = None, *, events: BootEvents | None = None, registry: Registry | None = None
) -> Member:
    """Bring one more worker up (same spec, a key of its own) and register it while the fleet serves."""
    events = events or BootEvents()
    registry = registry or Registry()
    fleet = fm.serving_fleet(registry, fleet_ref)
    spec = fm.worker_spec(
        ServeSpec.from_record(registry.get(fleet.id).spec), fleet.id, fm.shared_worker_key(fleet)
    )
    endpoint = lifecycle.up(spec, events=events, registry=registry)
    try:
        with gw.admin_client(fleet.url, fleet.endpoint.api_key) as admin:
            events.status(f"registering {endpoint.id} with the gateway")
            member = gw.register_endpoint(admin, fleet.gateway, endpoint)
    except BaseException:
        lifecycle.down(registry.get(endpoint.id), registry)
        raise
    fm.change_members(registry, fleet.id, add=member)
    return member


def remove_worker(fleet_ref: str | None, endpoint_ref: str, *, registry: Registry | None = None) -> Member:
    """Deregister a worker (no new request reaches it), let its in-flight requests finish, then take it
    down."""
    registry = registry or Registry()
    fleet = fm.serving_fleet(registry, fleet_ref)
    member = fm.find_member(fleet, endpoint_ref)
    if len(fleet.members) == 1:
        raise ConfigError(
            f"{member.endpoint_id} is the last worker of fleet {fleet.id}.",
            hint=f"`sandserve fleet down {fleet.id}` takes the whole fleet down.",
        )
    drain_and_remove(fleet, member, registry)
    return member


def scale_fleet(
    fleet_ref: str | None,
    *,
    min_workers: int | None = None,
    max_workers: int | None = None,
    registry: Registry | None = None,
    **settings: Any,
) -> ScalerSettings:
    """Change the bounds (and other settings) of a serving fleet's autoscaler; start one if it has none."""
    registry = registry or Registry()
    fleet = fm.serving_fleet(registry, fleet_ref)
    return update_scaler_settings(
        fleet.id, registry, min_workers=min_workers, max_workers=max_workers, **settings
    )


def fleet_down(fleet_ref: str | None = None, *, registry: Registry | None = None) -> str:
    """Stop the autoscaler, the gateway and every worker; returns the fleet's id. Safe to run again."""
    registry = registry or Registry()
    record = fm.fleet_record(registry, fleet_ref)
    stop_scaler(record.id, registry)
    lifecycle.down(record, registry)
    return record.id


def load_fleet(fleet_ref: str | None = None, *, registry: Registry | None = None) -> Fleet:
    return Fleet.from_record(fm.fleet_record(registry or Registry(), fleet_ref))


def fleet_status(fleet_ref: str | None = None, *, registry: Registry | None = None) -> list[FleetStatus]:
    """The fleet named (else every fleet up): its gateway, its autoscaler, and each worker as the gateway, its
    provider and its engine's own load endpoint see it."""
    registry = registry or Registry()
    records = [fm.fleet_record(registry, fleet_ref)] if fleet_ref is not None else fm.fleet_records(registry)
    return [_status_of(registry, record) for record in records]


def check_fleet_request(
    spec: ServeSpec,
    workers: int,
    policy: str,
    gateway_port: int | None = None,
    *,
    gateway: str = DEFAULT_GATEWAY,
    public_gateway: bool = False,
) -> None:
    """Refuse a fleet that cannot work, before anything is started."""
    if workers < 1:
        raise ConfigError(
            f"A fleet needs at least one worker, not {workers}.", hint="Pass --workers 1 or more."
        )
    if policy not in POLICIES:
        raise ConfigError(f"Unknown routing policy {policy!r}.", hint=f"Use one of: {', '.join(POLICIES)}.")
    if policy == "power_of_two" and workers < 2:
        raise ConfigError(
            "power_of_two picks the less loaded of two workers: it needs at least 2 (the gateway refuses to "
            "start with fewer).",
            hint="Pass --workers 2 or more, or another --policy.",
        )
    if not get_provider(spec.provider).remote and spec.port is not None:
        raise ConfigError(
            "Each local worker listens on a free port of its own; they cannot share one --port.",
            hint="Leave the worker port out; the gateway's own port is --gateway-port.",
        )
    if gateway in KEY_PASSING_GATEWAYS and public_gateway:
        raise ConfigError(
            f"{gateway} sends each worker the client's own Authorization header (the OpenAI SDK always sends "
            "one), so its workers can only check the gateway's key: it cannot be a public gateway.",
            hint=f"Leave out --public-gateway with {gateway}, or use sglang-router.",
        )
    if gateway_port is not None and not port_is_free(gateway_port):
        raise PortInUseError(gateway_port)
    gw.check_gateway_installed(gateway)


def _boot_text(registry: Registry, endpoint_id: str) -> str | None:
    from sandserve.serve.boots import boot_of
    from sandserve.serve.receipt import seconds_text

    receipt = boot_of(registry, endpoint_id)
    return f"{receipt.origin} {seconds_text(receipt.total)}" if receipt else None


def _status_of(registry: Registry, record: Record) -> FleetStatus:
    record = lifecycle.refresh(record, registry)
    handle = gateway_handle(record)
    listed: dict[str, dict[str, Any]] = {}
    if record.live and record.endpoint is not None:
        try:
            with gw.admin_client(record.endpoint.url, record.endpoint.api_key) as admin:
                listed = {worker["id"]: worker for worker in gw.listed_workers(admin, handle)}
        except SandserveError:
            listed = {}
    scaler = scaler_summary(record.id, registry)
    if scaler is not None and scaler.get("holder_worker_id"):
        listed.pop(scaler["holder_worker_id"], None)  # the holder: shown as the scaler's held requests
    workers = []
    for member in handle.members:
        seen = listed.pop(member.worker_id, None)
        running = fm.worker_running(registry, member.endpoint_id)
        endpoint = registry.get(member.endpoint_id).endpoint if running else None
        load = read_load(endpoint) if endpoint is not None else None
        workers.append(
            WorkerStatus(
                worker_id=member.worker_id,
                url=member.url,
                endpoint_id=member.endpoint_id,
                healthy=bool(seen["is_healthy"]) if seen else None,
                load=seen.get("load") if seen else None,
                running=running,
                requests_running=load.running if load else None,
                requests_queued=load.queued if load else None,
                cache_hit_rate=load.cache_hit_rate if load else None,
                boot=_boot_text(registry, member.endpoint_id),
            )
        )
    for worker_id, seen in listed.items():
        workers.append(
            WorkerStatus(
                worker_id=worker_id,
                url=str(seen.get("url")),
                endpoint_id=None,
                healthy=bool(seen.get("is_healthy")),
                load=seen.get("load"),
                running=None,
            )
        )
    return FleetStatus(
        id=record.id,
        state=record.shown_state,
        url=record.endpoint.url if record.endpoint else None,
        policy=handle.policy or DEFAULT_POLICY,
        gateway_running=bool(record.live),
        workers=workers,
        log_path=record.log_path,
        gateway=handle.gateway or DEFAULT_GATEWAY,
        scaler=scaler,
        degraded=record.degraded,
    )
