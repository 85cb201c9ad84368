"""Fleets: N endpoints behind SGLang's Model Gateway (``sglang-router``), used as ONE endpoint.

Workers are ordinary endpoints (``lifecycle.up``, one ledger row each, labelled with their fleet). The gateway
is a detached process on this machine (127.0.0.1), with a ledger row of its own (provider ``gateway``): ``ls``
shows it, and ``down`` stops it together with its workers. What shapes this module (facts/gateway.md):

- the gateway passes only ``Authorization`` on to workers, never Daytona's preview-token header, so every worker
  is served in auth mode ``key`` (public preview, the engine checks a Bearer key) and registered with its key;
- registration (``POST /workers``) is a background job, so each worker is waited for until the gateway lists
  it healthy, and a fleet is ready only once a real one-token completion went through the gateway;
- ``power_of_two`` refuses to start unless two workers are on its command line: for it the first workers are
  given there, and their keys are set afterwards (``PUT /workers/{id}``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import re
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import httpx

from sandserve.endpoint import Endpoint
from sandserve.engines.base import Launch
from sandserve.errors import (
    AmbiguousEndpointError,
    BootInterruptedError,
    ConfigError,
    EndpointNotFoundError,
    FleetBootError,
    FleetNotFoundError,
    GatewayDiedError,
    GatewayError,
    NotAFleetMemberError,
    PortInUseError,
    SandserveError,
)
from sandserve.paths import logs_dir
from sandserve.providers import get_provider
from sandserve.providers.base import SandboxHandle
from sandserve.providers.gateway import GATEWAY_PROVIDER
from sandserve.providers.local import HOST, free_port, port_is_free
from sandserve.serve import lifecycle
from sandserve.serve.ledger import FLEET_LABEL, Record, Registry, State
from sandserve.serve.lifecycle import BootEvents
from sandserve.spec import AuthMode, ProviderName, ServeSpec

Policy = Literal["cache_aware", "round_robin", "random", "power_of_two"]
POLICIES: tuple[str, ...] = get_args(Policy)
DEFAULT_POLICY: Policy = "cache_aware"

GATEWAY_START_TIMEOUT = 60.0
REGISTRATION_TIMEOUT = 120.0
POLL_SECONDS = 0.2
READINESS_PROMPT = "Ready?"

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Member:
    """One worker of a fleet: its endpoint in the ledger and its id in the gateway."""

    endpoint_id: str
    worker_id: str
    """The gateway's UUID for the worker (``DELETE /workers/{worker_id}``)."""
    url: str


@dataclass
class Fleet:
    id: str
    policy: str
    endpoint: Endpoint
    """The ONE endpoint clients use (the gateway's URL and key), like any other: ``.openai()``..."""
    members: list[Member]
    gateway: SandboxHandle
    """The gateway process: pid, start time, port, log path (and the members, as stored in the ledger)."""

    @property
    def url(self) -> str:
        return self.endpoint.url

    @classmethod
    def from_record(cls, record: Record) -> Fleet:
        if record.endpoint is None:
            raise FleetNotFoundError(
                record.id, reason=f"Fleet {record.id} is {record.shown_state}, not ready."
            )
        data = record.sandbox.data
        return cls(
            id=record.id,
            policy=str(data.get("policy", DEFAULT_POLICY)),
            endpoint=record.endpoint,
            members=[Member(**member) for member in data.get("members", [])],
            gateway=record.sandbox,
        )


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


@dataclass(frozen=True)
class FleetStatus:
    id: str
    state: str
    url: str | None
    policy: str
    gateway_running: bool
    workers: list[WorkerStatus]
    log_path: str | None


# --- the verbs ----------------------------------------------------------------------------------------


def fleet_up(
    spec: ServeSpec,
    workers: int,
    policy: str = DEFAULT_POLICY,
    *,
    public_gateway: bool = False,
    gateway_port: int | None = None,
    gateway_args: Sequence[str] = (),
    events: BootEvents | None = None,
    registry: Registry | None = None,
) -> Fleet:
    """Bring ``workers`` endpoints of ``spec`` up behind one gateway; return when it really generates.

    Every worker is served in auth mode ``key`` with a key of its own. On any failure everything started is
    stopped (no gateway or worker is left running) and FleetBootError names the cause."""
    events = events or BootEvents()
    registry = registry or Registry()
    check_fleet_request(spec, workers, policy, gateway_port)
    fleet_id = f"fleet-{secrets.token_hex(3)}"
    registry.add(
        fleet_id,
        provider=GATEWAY_PROVIDER,
        engine=spec.engine,
        model=spec.served_name,
        spec=spec.to_record(),
        sandbox=SandboxHandle(GATEWAY_PROVIDER, fleet_id, {"policy": policy, "members": []}),
    )
    try:
        endpoints = _boot_workers(fleet_id, spec, workers, events, registry)
        api_key = None if public_gateway else _new_key()
        # power_of_two will not start without two workers on its command line (facts/gateway.md).
        startup_workers = endpoints if policy == "power_of_two" else []
        handle = _start_gateway(
            fleet_id, policy, api_key, gateway_port, startup_workers, gateway_args, events, registry
        )
        url = f"http://{HOST}:{handle.data['port']}"
        with _admin_client(url, api_key) as admin:
            events.status(f"registering {len(endpoints)} worker(s) with the gateway ({policy})")
            if startup_workers:
                members = _adopt_startup_workers(admin, handle, endpoints)
            else:
                members = [_register(admin, handle, endpoint) for endpoint in endpoints]
            events.status("waiting for a real generation through the gateway")
            _wait_until_generates(admin, handle, spec.served_name)
    except KeyboardInterrupt:
        _abandon(fleet_id, registry, "interrupted while booting")
        raise BootInterruptedError(endpoint_id=fleet_id, log_path=None) from None
    except SandserveError as exc:
        _abandon(fleet_id, registry, exc.message)
        raise FleetBootError(fleet_id=fleet_id, cause=exc) from exc
    except BaseException:
        _abandon(fleet_id, registry, "failed while booting")
        raise

    endpoint = _fleet_endpoint(fleet_id, url, api_key, endpoints[0], policy)
    handle.data["members"] = [dataclasses.asdict(member) for member in members]
    registry.update(fleet_id, state=State.READY, endpoint=endpoint, sandbox=handle)
    return Fleet(id=fleet_id, policy=policy, endpoint=endpoint, members=members, gateway=handle)


def add_worker(
    fleet_ref: str | None = None, *, events: BootEvents | None = None, registry: Registry | None = None
) -> Member:
    """Bring one more worker up (same spec, a key of its own) and register it while the fleet serves."""
    events = events or BootEvents()
    registry = registry or Registry()
    fleet = _serving_fleet(registry, fleet_ref)
    spec = _worker_spec(ServeSpec.from_record(registry.get(fleet.id).spec), fleet.id)
    endpoint = lifecycle.up(spec, events=events, registry=registry)
    try:
        with _admin_client(fleet.url, fleet.endpoint.api_key) as admin:
            events.status(f"registering {endpoint.id} with the gateway")
            member = _register(admin, fleet.gateway, endpoint)
    except BaseException:
        lifecycle.down(registry.get(endpoint.id), registry)
        raise
    _change_members(registry, fleet.id, add=member)
    return member


def remove_worker(fleet_ref: str | None, endpoint_ref: str, *, registry: Registry | None = None) -> Member:
    """Deregister a worker from the gateway (so no request is routed to it any more), then take it down."""
    registry = registry or Registry()
    fleet = _serving_fleet(registry, fleet_ref)
    member = _find_member(fleet, endpoint_ref)
    if len(fleet.members) == 1:
        raise ConfigError(
            f"{member.endpoint_id} is the last worker of fleet {fleet.id}.",
            hint=f"`sandserve fleet down {fleet.id}` takes the whole fleet down.",
        )
    with _admin_client(fleet.url, fleet.endpoint.api_key) as admin:
        _deregister(admin, fleet.gateway, member)
    _change_members(registry, fleet.id, remove=member)
    record = registry.get(member.endpoint_id)
    if record.state is not State.DOWN:
        lifecycle.down(record, registry)
    return member


def fleet_down(fleet_ref: str | None = None, *, registry: Registry | None = None) -> str:
    """Stop the gateway and take every worker down; returns the fleet's id. Safe to run again."""
    registry = registry or Registry()
    record = _fleet_record(registry, fleet_ref)
    lifecycle.down(record, registry)
    return record.id


def load_fleet(fleet_ref: str | None = None, *, registry: Registry | None = None) -> Fleet:
    return Fleet.from_record(_fleet_record(registry or Registry(), fleet_ref))


def fleet_status(fleet_ref: str | None = None, *, registry: Registry | None = None) -> list[FleetStatus]:
    """The fleet named (else every fleet up): its gateway, and each worker as the gateway and its provider see it."""
    registry = registry or Registry()
    if fleet_ref is not None:
        records = [_fleet_record(registry, fleet_ref)]
    else:
        records = [record for record in registry.list() if record.provider == GATEWAY_PROVIDER]
    return [_status_of(registry, record) for record in records]


def check_fleet_request(spec: ServeSpec, workers: int, policy: str, gateway_port: int | None = None) -> None:
    """Refuse a fleet that cannot work, before anything is started."""
    if workers < 1:
        raise ConfigError(
            f"A fleet needs at least one worker, not {workers}.", hint="Pass --workers 1 or more."
        )
    if policy not in POLICIES:
        raise ConfigError(f"Unknown routing policy {policy!r}.", hint=f"Use one of: {', '.join(POLICIES)}.")
    if policy == "power_of_two" and workers < 2:
        raise ConfigError(
            "power_of_two picks the less loaded of two workers: it needs at least 2 (the gateway refuses to start "
            "with fewer).",
            hint="Pass --workers 2 or more, or another --policy.",
        )
    if spec.provider is ProviderName.LOCAL and spec.port is not None:
        raise ConfigError(
            "Each local worker listens on a free port of its own; they cannot share one --port.",
            hint="Leave the worker port out; the gateway's own port is --gateway-port.",
        )
    if gateway_port is not None and not port_is_free(gateway_port):
        raise PortInUseError(gateway_port)
    if importlib.util.find_spec("sglang_router") is None:
        raise ConfigError(
            "The gateway (sglang-router) is not installed in this Python environment.",
            hint=f"Install it: {sys.executable} -m pip install sglang-router",
        )


def gateway_launch(
    *,
    port: int,
    prometheus_port: int,
    policy: str,
    api_key: str | None,
    worker_urls: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> Launch:
    """The gateway's command line (sglang-router of this Python environment)."""
    argv = [
        sys.executable,
        "-m",
        "sglang_router.launch_router",
        "--host",
        HOST,
        "--port",
        str(port),
        "--policy",
        policy,
        # Its metrics listen on 0.0.0.0:29000 unless told otherwise: keep them private, on a port of their own.
        "--prometheus-host",
        HOST,
        "--prometheus-port",
        str(prometheus_port),
        # A retry goes back to the worker cache_aware prefers, so a dead worker holding a prefix fails all 5
        # attempts until its breaker opens (default: after 10 failures, i.e. two requests answered 500).
        # Below 5 it opens within the first request, whose last attempts then go to another worker.
        "--cb-failure-threshold",
        "3",
        # A dead worker shows as unhealthy within about 30 s (the default interval is 60 s, three misses).
        "--health-check-interval-secs",
        "10",
        "--worker-startup-timeout-secs",
        str(int(REGISTRATION_TIMEOUT)),
        # At info it writes two lines per request, for as long as the fleet serves.
        "--log-level",
        "warn",
    ]
    if worker_urls:
        argv += ["--worker-urls", *worker_urls]
    if api_key:
        argv += ["--api-key", api_key]
    argv += list(extra_args)
    # Without it the gateway tries to fetch a tokenizer from the Hub (a slow warning when offline).
    return Launch(argv=argv, env={"HF_HUB_OFFLINE": "1"}, secrets=frozenset({api_key} if api_key else ()))


# --- booting the workers --------------------------------------------------------------------------------


class _WorkerEvents(BootEvents):
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


def _boot_workers(
    fleet_id: str, spec: ServeSpec, count: int, events: BootEvents, registry: Registry
) -> list[Endpoint]:
    """Boot ``count`` workers at once (a GPU boot takes minutes; one after another would take N times that)."""
    futures: list[concurrent.futures.Future[Endpoint]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=count, thread_name_prefix=fleet_id) as pool:
        try:
            for number in range(1, count + 1):
                futures.append(
                    pool.submit(
                        lifecycle.up,
                        _worker_spec(spec, fleet_id),
                        events=_WorkerEvents(events, f"worker {number}/{count}"),
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
                _take_down_members(registry, fleet_id, quietly=True, include_down=True)
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


def _worker_spec(spec: ServeSpec, fleet_id: str) -> ServeSpec:
    return spec.with_overrides(
        # The gateway can only send a worker a Bearer key; a worker without one would answer anyone directly.
        auth=AuthMode.KEY,
        api_key=_new_key(),
        # Nothing of a failed fleet may keep running (or billing): a worker that fails is never kept.
        delete_on_failure=True,
        labels={**spec.labels, FLEET_LABEL: fleet_id},
    )


def _new_key() -> str:
    return "sk-" + secrets.token_urlsafe(24)


# --- the gateway process ----------------------------------------------------------------------------------


def _start_gateway(
    fleet_id: str,
    policy: str,
    api_key: str | None,
    port: int | None,
    startup_workers: Sequence[Endpoint],
    extra_args: Sequence[str],
    events: BootEvents,
    registry: Registry,
) -> SandboxHandle:
    provider = get_provider(GATEWAY_PROVIDER)
    handle = registry.get(fleet_id).sandbox
    port = port or free_port()
    prometheus_port = free_port()
    while prometheus_port == port:
        prometheus_port = free_port()
    log_path = logs_dir() / f"{fleet_id}.log"
    handle.data.update(port=port, prometheus_port=prometheus_port, log_path=str(log_path))
    launch = gateway_launch(
        port=port,
        prometheus_port=prometheus_port,
        policy=policy,
        api_key=api_key,
        worker_urls=[endpoint.url for endpoint in startup_workers],
        extra_args=extra_args,
    )
    events.status("starting the gateway: " + launch.display_command())
    provider.start(handle, launch)
    registry.update(fleet_id, sandbox=handle, log_path=log_path)
    _wait_until_listening(handle)
    return handle


def _wait_until_listening(handle: SandboxHandle) -> None:
    url = f"http://{HOST}:{handle.data['port']}/health"
    deadline = time.monotonic() + GATEWAY_START_TIMEOUT
    while True:
        _check_gateway_alive(handle)
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise GatewayError(
                f"The gateway did not answer on {url} within {GATEWAY_START_TIMEOUT:.0f} s.",
                log_path=_log_path(handle),
            )
        time.sleep(POLL_SECONDS)


def _check_gateway_alive(handle: SandboxHandle) -> None:
    exit_code = get_provider(GATEWAY_PROVIDER).exit_code(handle)
    if exit_code is not None:
        raise GatewayDiedError(
            exit_code=exit_code, log_tail=gateway_log_tail(handle), log_path=_log_path(handle)
        )


def gateway_log_tail(handle: SandboxHandle, lines: int = 15) -> str:
    """The end of the gateway's log, without its colour codes."""
    text = _ANSI_ESCAPE.sub("", get_provider(GATEWAY_PROVIDER).read_log(handle))
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_path(handle: SandboxHandle) -> Path | None:
    return Path(handle.data["log_path"]) if handle.data.get("log_path") else None


# --- the gateway's admin API ------------------------------------------------------------------------------


@contextmanager
def _admin_client(url: str, api_key: str | None) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        yield client


def _admin_call(
    admin: httpx.Client, handle: SandboxHandle, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    try:
        return admin.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        _check_gateway_alive(handle)
        raise GatewayError(
            f"The gateway did not answer {method} {path}: {exc}.", log_path=_log_path(handle)
        ) from exc


def _register(admin: httpx.Client, handle: SandboxHandle, endpoint: Endpoint) -> Member:
    body: dict[str, Any] = {"url": endpoint.url, "model_id": endpoint.model}
    if endpoint.api_key:
        body["api_key"] = endpoint.api_key
    response = _admin_call(admin, handle, "POST", "/workers", json=body)
    if response.status_code not in (200, 201, 202):
        raise GatewayError(
            f"The gateway refused worker {endpoint.url} ({response.status_code}): {response.text[:300]}",
            log_path=_log_path(handle),
        )
    worker_id = str(response.json()["worker_id"])
    _wait_until_registered(admin, handle, worker_id, endpoint.url)
    return Member(endpoint_id=endpoint.id, worker_id=worker_id, url=endpoint.url)


def _adopt_startup_workers(
    admin: httpx.Client, handle: SandboxHandle, endpoints: Sequence[Endpoint]
) -> list[Member]:
    """Workers given on the command line: find their ids, then give each its key (the command line has none)."""
    ids_by_url = _wait_until_listed(admin, handle, [endpoint.url for endpoint in endpoints])
    members = []
    for endpoint in endpoints:
        worker_id = ids_by_url[endpoint.url]
        if endpoint.api_key:
            response = _admin_call(
                admin, handle, "PUT", f"/workers/{worker_id}", json={"api_key": endpoint.api_key}
            )
            if response.status_code not in (200, 202):
                raise GatewayError(
                    f"The gateway refused the key of worker {endpoint.url} ({response.status_code}): "
                    f"{response.text[:300]}",
                    log_path=_log_path(handle),
                )
        _wait_until_registered(admin, handle, worker_id, endpoint.url)
        members.append(Member(endpoint_id=endpoint.id, worker_id=worker_id, url=endpoint.url))
    return members


def _wait_until_listed(admin: httpx.Client, handle: SandboxHandle, urls: Sequence[str]) -> dict[str, str]:
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while True:
        listed = {worker["url"]: worker["id"] for worker in _listed_workers(admin, handle)}
        if all(url in listed for url in urls):
            return {url: listed[url] for url in urls}
        if time.monotonic() > deadline:
            missing = ", ".join(url for url in urls if url not in listed)
            raise GatewayError(
                f"The gateway did not take up {missing} within {REGISTRATION_TIMEOUT:.0f} s.",
                log_path=_log_path(handle),
            )
        time.sleep(POLL_SECONDS)


def _wait_until_registered(admin: httpx.Client, handle: SandboxHandle, worker_id: str, url: str) -> None:
    """Until the gateway lists the worker as healthy with no job of its own still pending."""
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while True:
        response = _admin_call(admin, handle, "GET", f"/workers/{worker_id}")
        if response.status_code == 200:
            worker = response.json()
            job = worker.get("job_status") or {}
            if job.get("status") == "failed":
                raise GatewayError(
                    f"The gateway could not register worker {url}: {job.get('message')}",
                    log_path=_log_path(handle),
                )
            if worker.get("is_healthy") and job.get("status") not in ("pending", "processing"):
                return
        if time.monotonic() > deadline:
            raise GatewayError(
                f"The gateway did not register worker {url} within {REGISTRATION_TIMEOUT:.0f} s.",
                hint="Check that the gateway can reach the worker's URL.",
                log_path=_log_path(handle),
            )
        time.sleep(POLL_SECONDS)


def _deregister(admin: httpx.Client, handle: SandboxHandle, member: Member) -> None:
    response = _admin_call(admin, handle, "DELETE", f"/workers/{member.worker_id}")
    if response.status_code not in (200, 202, 404):
        raise GatewayError(
            f"The gateway refused to remove worker {member.url} ({response.status_code}): "
            f"{response.text[:300]}",
            log_path=_log_path(handle),
        )
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while _admin_call(admin, handle, "GET", f"/workers/{member.worker_id}").status_code != 404:
        if time.monotonic() > deadline:
            raise GatewayError(
                f"The gateway did not remove worker {member.url} within {REGISTRATION_TIMEOUT:.0f} s.",
                log_path=_log_path(handle),
            )
        time.sleep(POLL_SECONDS)


def _listed_workers(admin: httpx.Client, handle: SandboxHandle) -> list[dict[str, Any]]:
    response = _admin_call(admin, handle, "GET", "/workers")
    if response.status_code != 200:
        raise GatewayError(
            f"The gateway did not list its workers ({response.status_code}): {response.text[:300]}",
            log_path=_log_path(handle),
        )
    return list(response.json().get("workers", []))


def _wait_until_generates(admin: httpx.Client, handle: SandboxHandle, model: str) -> None:
    """A real one-token completion through the gateway: its routing, its key and a worker's key all work."""
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    body = {"model": model, "prompt": READINESS_PROMPT, "max_tokens": 1, "temperature": 0}
    while True:
        response = _admin_call(admin, handle, "POST", "/v1/completions", json=body)
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise GatewayError(
                f"No completion went through the gateway within {REGISTRATION_TIMEOUT:.0f} s "
                f"(last answer {response.status_code}: {response.text[:300]}).",
                log_path=_log_path(handle),
            )
        time.sleep(POLL_SECONDS)


# --- the ledger ---------------------------------------------------------------------------------------------


def _fleet_record(registry: Registry, ref: str | None) -> Record:
    if ref is None:
        fleets = [record for record in registry.list() if record.provider == GATEWAY_PROVIDER]
        if not fleets:
            raise FleetNotFoundError(None)
        if len(fleets) > 1:
            raise AmbiguousEndpointError([record.id for record in fleets])
        return fleets[0]
    try:
        record = registry.resolve(ref)
    except EndpointNotFoundError:
        raise FleetNotFoundError(ref) from None
    if record.provider != GATEWAY_PROVIDER:
        raise FleetNotFoundError(ref, reason=f"{record.id} is an endpoint, not a fleet.")
    return record


def _serving_fleet(registry: Registry, ref: str | None) -> Fleet:
    record = lifecycle.refresh(_fleet_record(registry, ref))
    fleet = Fleet.from_record(record)
    if record.state is not State.READY:
        raise FleetNotFoundError(record.id, reason=f"Fleet {record.id} is {record.shown_state}, not ready.")
    if not record.live:
        raise GatewayError(
            f"The gateway of fleet {record.id} is not running any more.",
            hint=f"`sandserve fleet down {record.id}` stops its workers.",
            log_path=_log_path(record.sandbox),
        )
    return fleet


def _find_member(fleet: Fleet, endpoint_ref: str) -> Member:
    matches = [m for m in fleet.members if m.endpoint_id == endpoint_ref] or [
        m for m in fleet.members if m.endpoint_id.startswith(endpoint_ref)
    ]
    if len(matches) != 1:
        raise NotAFleetMemberError(fleet.id, endpoint_ref, [m.endpoint_id for m in fleet.members])
    return matches[0]


def _change_members(
    registry: Registry, fleet_id: str, *, add: Member | None = None, remove: Member | None = None
) -> None:
    handle = registry.get(fleet_id).sandbox
    members = [Member(**member) for member in handle.data.get("members", [])]
    members = [member for member in members if member != remove] + ([add] if add else [])
    handle.data["members"] = [dataclasses.asdict(member) for member in members]
    registry.update(fleet_id, sandbox=handle)


def _member_records(registry: Registry, fleet_id: str, *, include_down: bool = False) -> list[Record]:
    return registry.members_of(fleet_id, include_down=include_down)


def _take_down_members(
    registry: Registry, fleet_id: str, *, quietly: bool = False, include_down: bool = False
) -> None:
    failures: list[SandserveError] = []
    for record in _member_records(registry, fleet_id, include_down=include_down):
        try:
            lifecycle.down(record, registry)
        except SandserveError as exc:
            failures.append(exc)
    if failures and not quietly:
        raise failures[0]


def _abandon(fleet_id: str, registry: Registry, reason: str) -> None:
    """Stop everything a fleet started: the gateway and every worker, booting or up."""
    try:
        lifecycle.down(registry.get(fleet_id), registry)
        _take_down_members(registry, fleet_id)
    finally:
        registry.update(fleet_id, error=reason)


def _fleet_endpoint(fleet_id: str, url: str, api_key: str | None, worker: Endpoint, policy: str) -> Endpoint:
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


def _status_of(registry: Registry, record: Record) -> FleetStatus:
    record = lifecycle.refresh(record)
    members = [Member(**member) for member in record.sandbox.data.get("members", [])]
    listed: dict[str, dict[str, Any]] = {}
    if record.live and record.endpoint is not None:
        try:
            with _admin_client(record.endpoint.url, record.endpoint.api_key) as admin:
                listed = {worker["id"]: worker for worker in _listed_workers(admin, record.sandbox)}
        except SandserveError:
            listed = {}
    workers = []
    for member in members:
        seen = listed.pop(member.worker_id, None)
        workers.append(
            WorkerStatus(
                worker_id=member.worker_id,
                url=member.url,
                endpoint_id=member.endpoint_id,
                healthy=bool(seen["is_healthy"]) if seen else None,
                load=seen.get("load") if seen else None,
                running=_worker_running(registry, member.endpoint_id),
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
        policy=str(record.sandbox.data.get("policy", DEFAULT_POLICY)),
        gateway_running=bool(record.live),
        workers=workers,
        log_path=record.log_path,
    )


def _worker_running(registry: Registry, endpoint_id: str) -> bool | None:
    try:
        return lifecycle.refresh(registry.get(endpoint_id)).live
    except EndpointNotFoundError:
        return None


__all__ = [
    "DEFAULT_POLICY",
    "FLEET_LABEL",
    "GATEWAY_PROVIDER",
    "POLICIES",
    "Fleet",
    "FleetStatus",
    "Member",
    "Policy",
    "WorkerStatus",
    "add_worker",
    "check_fleet_request",
    "fleet_down",
    "fleet_status",
    "fleet_up",
    "gateway_launch",
    "gateway_log_tail",
    "load_fleet",
    "remove_worker",
]
