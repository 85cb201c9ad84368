"""A fleet's workers and its rows in the ledger: booting workers side by side, the gateway's row, members.

Workers are ordinary endpoints (``lifecycle.up``, one ledger row each, labelled with their fleet), served in
auth mode ``key``: the gateway passes a worker nothing but a Bearer key, never Daytona's preview-token header.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace

from sandserve.endpoint import Endpoint
from sandserve.errors import (
    EndpointNotFoundError,
    FleetNotFoundError,
    GatewayError,
    NotAFleetMemberError,
    SandserveError,
)
from sandserve.fleet.gateway import POLL_SECONDS, log_path_of
from sandserve.fleet.model import KEY_PASSING_GATEWAYS, Fleet, Member, gateway_handle
from sandserve.providers.gateway import GATEWAY_PROVIDER
from sandserve.serve import lifecycle
from sandserve.serve.boot_events import BootEvents
from sandserve.serve.ledger import FLEET_LABEL, Record, Registry, State
from sandserve.spec import AuthMode, ServeSpec


class WorkerEvents(BootEvents):
    """One worker's boot events, labelled, since several workers boot side by side."""

    def __init__(self, events: BootEvents, label: str) -> None:
        self._events = events
        self._label = label

    def status(self, message: str) -> None:
        self._events.status(f"{self._label}: {message}")

    def log(self, text: str) -> None:
        self._events.log("".join(f"[{self._label}] {line}" for line in text.splitlines(keepends=True)))

    def phase(self, name: str, seconds: float) -> None:
        self._events.phase(f"{self._label}: {name}", seconds)

    def build_progress(self, done: int, total: int, message: str) -> None:
        self._events.build_progress(done, total, message)


def boot_workers(
    fleet_id: str,
    spec: ServeSpec,
    count: int,
    events: BootEvents,
    registry: Registry,
    shared_key: str | None = None,
) -> list[Endpoint]:
    """Boot ``count`` workers at once (a GPU boot takes minutes; one after another would take N times
    that)."""
    futures: list[concurrent.futures.Future[Endpoint]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=count, thread_name_prefix=fleet_id) as pool:
        try:
            for number in range(1, count + 1):
                futures.append(
                    pool.submit(
                        lifecycle.up,
                        worker_spec(spec, fleet_id, shared_key),
                        events=WorkerEvents(events, f"worker {number}/{count}"),
                        registry=registry,
                    )
                )
            failure = _first_failure(futures)
            if failure is not None:
                raise failure
        except BaseException:
            # Boots still under way see their server vanish and end at once, instead of running to completion;
            # again and again, since a boot may record its server only after a first sweep.
            while not all(future.done() for future in futures):
                take_down_members(registry, fleet_id, quietly=True, include_down=True)
                time.sleep(5 * POLL_SECONDS)
            raise
    return [future.result() for future in futures]


def _first_failure(futures: Sequence[concurrent.futures.Future[Endpoint]]) -> BaseException | None:
    """Poll rather than ``concurrent.futures.wait``: a Ctrl-C inside ``wait`` can leave the futures' locks
    held, and then no boot can ever finish."""
    while True:
        failures = [future.exception() for future in futures if future.done() and future.exception()]
        if failures:
            return failures[0]
        if all(future.done() for future in futures):
            return None
        time.sleep(POLL_SECONDS)


def worker_spec(spec: ServeSpec, fleet_id: str, shared_key: str | None = None) -> ServeSpec:
    """A worker's spec: a key of its own, or ``shared_key`` (the gateway's) behind smg, which sends a worker
    the client's own Authorization header instead of the worker's key."""
    return replace(
        spec,
        # The gateway can only send a worker a Bearer key; a worker without one would answer anyone directly.
        auth=AuthMode.KEY,
        api_key=shared_key or new_key(),
        # Nothing of a failed fleet may keep running (or billing): a worker that fails is never kept.
        delete_on_failure=True,
        labels={**spec.labels, FLEET_LABEL: fleet_id},
    )


def new_key() -> str:
    return "sk-" + secrets.token_urlsafe(24)


def shared_worker_key(fleet: Fleet) -> str | None:
    """The key new workers of ``fleet`` must accept when its gateway passes the client's key through (smg)."""
    return fleet.endpoint.api_key if fleet.gateway_name in KEY_PASSING_GATEWAYS else None


# --- the ledger ---------------------------------------------------------------------------------------------


def fleet_records(registry: Registry) -> list[Record]:
    return [record for record in registry.list() if record.provider == GATEWAY_PROVIDER]


def fleet_record(registry: Registry, ref: str | None) -> Record:
    if ref is None:
        fleets = fleet_records(registry)
        if not fleets:
            raise FleetNotFoundError(None)
        if len(fleets) > 1:
            ids = [record.id for record in fleets]
            raise SandserveError(
                f"Several fleets are up: {', '.join(ids)}.",
                hint=f"Name one after the verb, e.g. `sandserve fleet status {ids[0]}`.",
            )
        return fleets[0]
    try:
        record = registry.resolve(ref)
    except EndpointNotFoundError:
        raise FleetNotFoundError(ref) from None
    if record.provider != GATEWAY_PROVIDER:
        raise FleetNotFoundError(ref, reason=f"{record.id} is an endpoint, not a fleet.")
    return record


def serving_fleet(registry: Registry, ref: str | None) -> Fleet:
    record = lifecycle.refresh(fleet_record(registry, ref))
    fleet = Fleet.from_record(record)
    if record.state is not State.READY:
        raise FleetNotFoundError(record.id, reason=f"Fleet {record.id} is {record.shown_state}, not ready.")
    if not record.live:
        raise GatewayError(
            f"The gateway of fleet {record.id} is not running any more.",
            hint=f"`sandserve fleet down {record.id}` stops its workers.",
            log_path=log_path_of(record.sandbox),
        )
    return fleet


def find_member(fleet: Fleet, endpoint_ref: str) -> Member:
    matches = [m for m in fleet.members if m.endpoint_id == endpoint_ref] or [
        m for m in fleet.members if m.endpoint_id.startswith(endpoint_ref)
    ]
    if len(matches) != 1:
        raise NotAFleetMemberError(fleet.id, endpoint_ref, [m.endpoint_id for m in fleet.members])
    return matches[0]


def change_members(
    registry: Registry, fleet_id: str, *, add: Member | None = None, remove: Member | None = None
) -> None:
    handle = gateway_handle(registry.get(fleet_id))
    handle.members = [member for member in handle.members if member != remove] + ([add] if add else [])
    registry.update(fleet_id, sandbox=handle)


def take_down_members(
    registry: Registry, fleet_id: str, *, quietly: bool = False, include_down: bool = False
) -> None:
    failures: list[SandserveError] = []
    for record in registry.members_of(fleet_id, include_down=include_down):
        try:
            lifecycle.down(record, registry)
        except SandserveError as exc:
            failures.append(exc)
    if failures and not quietly:
        raise failures[0]


def abandon(fleet_id: str, registry: Registry, reason: str) -> None:
    """Stop everything a fleet started: the gateway and every worker, booting or up."""
    try:
        lifecycle.down(registry.get(fleet_id), registry)
        take_down_members(registry, fleet_id)
    finally:
        registry.update(fleet_id, error=reason)


def fleet_endpoint(fleet_id: str, url: str, api_key: str | None, worker: Endpoint, policy: str) -> Endpoint:
    """The ONE endpoint: the gateway's URL and key; the model, engine and capabilities of its workers."""
    return Endpoint(
        id=fleet_id,
        url=url,
        model=worker.model,
        engine=worker.engine,
        provider=GATEWAY_PROVIDER,
        auth="key" if api_key else "public",
        api_key=api_key,
        info={
            "policy": policy,
            "worker_provider": worker.provider,
            **{
                key: worker.info[key]
                for key in ("capabilities", "preset", "model_path")
                if key in worker.info
            },
        },
    )


def worker_running(registry: Registry, endpoint_id: str) -> bool | None:
    try:
        return lifecycle.refresh(registry.get(endpoint_id)).live
    except EndpointNotFoundError:
        return None
