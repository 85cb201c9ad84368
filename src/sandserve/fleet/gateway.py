"""The gateway process (sglang-router or smg, on 127.0.0.1) and its admin API.

What shapes this module (facts/gateway.md):
- registration (``POST /workers``) is a background job, so each worker is waited for until the gateway lists
  it healthy, and a fleet is ready only once a real one-token completion went through the gateway;
- the gateway's metrics listen on 0.0.0.0 unless told otherwise: they are kept on 127.0.0.1, on a port of
  their own.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from sandserve.endpoint import Endpoint
from sandserve.engines.base import Launch
from sandserve.engines.priority import GATEWAY_PRIORITY_FLAGS
from sandserve.errors import ConfigError, GatewayDiedError, GatewayError
from sandserve.fleet.model import DEFAULT_GATEWAY, Member, gateway_handle
from sandserve.paths import logs_dir
from sandserve.providers import get_provider
from sandserve.providers.gateway import GATEWAY_PROVIDER
from sandserve.providers.handles import GatewayHandle, SandboxHandle
from sandserve.providers.local import HOST, free_port
from sandserve.serve.boot_events import BootEvents
from sandserve.serve.ledger import Registry
from sandserve.tls import tls_context

GATEWAY_START_TIMEOUT = 60.0
REGISTRATION_TIMEOUT = 120.0
POLL_SECONDS = 0.2
READINESS_PROMPT = "Ready?"
#: The Python module that launches each gateway, and the package that provides it.
_GATEWAY_MODULES = {"sglang-router": "sglang_router.launch_router", "smg": "smg.launch_router"}
_GATEWAY_PACKAGES = {"sglang-router": "sglang_router", "smg": "smg"}

#: How long a stopping gateway lets the answers in flight finish.
SHUTDOWN_GRACE_SECONDS = 3
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def check_gateway_installed(gateway: str) -> None:
    if gateway not in _GATEWAY_MODULES:
        raise ConfigError(f"Unknown gateway {gateway!r}.", hint=f"Use one of: {', '.join(_GATEWAY_MODULES)}.")
    if importlib.util.find_spec(_GATEWAY_PACKAGES[gateway]) is None:
        raise ConfigError(
            f"The gateway ({gateway}) is not installed in this Python environment.",
            hint=f"Install it: {sys.executable} -m pip install {gateway}",
        )


def gateway_launch(
    *,
    port: int,
    prometheus_port: int,
    policy: str,
    api_key: str | None,
    worker_urls: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    gateway: str = DEFAULT_GATEWAY,
) -> Launch:
    """The gateway's command line (sglang-router's or smg's launcher, from this Python environment)."""
    argv = [
        sys.executable,
        "-m",
        _GATEWAY_MODULES[gateway],
        "--host",
        HOST,
        "--port",
        str(port),
        "--policy",
        policy,
        # Its metrics listen on 0.0.0.0:29000 unless told otherwise: keep them private, on a port of their
        # own.
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
        # `down` stops the gateway before its workers and kills what still runs 5 s after asking
        # (providers/local.py's STOP_GRACE_SECONDS): answers in flight get 3 s to finish; the default, 180 s,
        # only ever ended in that kill.
        "--shutdown-grace-period-secs",
        str(SHUTDOWN_GRACE_SECONDS),
    ]
    if gateway == "smg":
        # smg retries a worker that is not ready at registration only every 30 s by default.
        argv += ["--worker-startup-check-interval", "1"]
        # Admission by the x-smg-priority header: batch work (bulk) waits behind people's requests.
        argv += list(GATEWAY_PRIORITY_FLAGS)
    if worker_urls:
        argv += ["--worker-urls", *worker_urls]
    argv += list(extra_args)
    # Without it the gateway tries to fetch a tokenizer from the Hub (a slow warning when offline).
    env = {"HF_HUB_OFFLINE": "1"}
    if api_key:
        # The gateway takes its key only as a flag, and any local user can read a command line in
        # /proc/PID/cmdline: a launcher adds the flag inside the process, from the environment.
        argv[1:3] = ["-c", _key_from_env_launcher(_GATEWAY_MODULES[gateway])]
        env[GATEWAY_KEY_ENV] = api_key
    return Launch(argv=argv, env=env, secrets=frozenset({api_key} if api_key else ()))


#: The environment variable that carries the gateway's API key to its launcher (masked by name wherever
#: shown).
GATEWAY_KEY_ENV = "SANDSERVE_GATEWAY_API_KEY"


def _key_from_env_launcher(module: str) -> str:
    """``python -m MODULE ARGS --api-key KEY`` with KEY read from the environment inside the process (both
    gateways' launchers start the router in the same process, so the key never reaches a command line)."""
    return (
        "import os, runpy, sys; "
        f"sys.argv = [{module!r}, *sys.argv[1:], '--api-key', os.environ.pop({GATEWAY_KEY_ENV!r})]; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )


# --- the process ------------------------------------------------------------------------------------------


def start_gateway(
    fleet_id: str,
    policy: str,
    api_key: str | None,
    port: int | None,
    startup_workers: Sequence[Endpoint],
    extra_args: Sequence[str],
    events: BootEvents,
    registry: Registry,
    gateway: str = DEFAULT_GATEWAY,
) -> GatewayHandle:
    provider = get_provider(GATEWAY_PROVIDER)
    handle = gateway_handle(registry.get(fleet_id))
    port = port or free_port()
    prometheus_port = free_port()
    while prometheus_port == port:
        prometheus_port = free_port()
    log_path = logs_dir() / f"{fleet_id}.log"
    handle.port, handle.prometheus_port, handle.log_path = port, prometheus_port, str(log_path)
    handle.gateway = gateway
    launch = gateway_launch(
        port=port,
        prometheus_port=prometheus_port,
        policy=policy,
        api_key=api_key,
        worker_urls=[endpoint.url for endpoint in startup_workers],
        extra_args=extra_args,
        gateway=gateway,
    )
    events.status(f"starting the gateway ({gateway}): " + launch.display_command())
    provider.start(handle, launch)
    registry.update(fleet_id, sandbox=handle, log_path=log_path)
    wait_until_listening(handle)
    return handle


def wait_until_listening(handle: GatewayHandle) -> None:
    url = f"http://{HOST}:{handle.port}/health"
    deadline = time.monotonic() + GATEWAY_START_TIMEOUT
    while True:
        check_gateway_alive(handle)
        try:
            if httpx.get(url, timeout=5, verify=tls_context()).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise GatewayError(
                f"The gateway did not answer on {url} within {GATEWAY_START_TIMEOUT:.0f} s.",
                log_path=log_path_of(handle),
            )
        time.sleep(POLL_SECONDS)


def check_gateway_alive(handle: GatewayHandle) -> None:
    exit_code = get_provider(GATEWAY_PROVIDER).exit_code(handle)
    if exit_code is not None:
        raise GatewayDiedError(
            exit_code=exit_code, log_tail=gateway_log_tail(handle), log_path=log_path_of(handle)
        )


def gateway_log_tail(handle: GatewayHandle, lines: int = 15) -> str:
    """The end of the gateway's log, without its colour codes."""
    text = _ANSI_ESCAPE.sub("", get_provider(GATEWAY_PROVIDER).read_log(handle))
    return "\n".join(text.rstrip().splitlines()[-lines:])


def log_path_of(handle: SandboxHandle) -> Path | None:
    return Path(handle.log_path) if handle.log_path else None


# --- the admin API ------------------------------------------------------------------------------------------


@contextmanager
def admin_client(url: str, api_key: str | None) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        yield client


def admin_call(
    admin: httpx.Client, handle: GatewayHandle, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    try:
        return admin.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        check_gateway_alive(handle)
        raise GatewayError(
            f"The gateway did not answer {method} {path}: {exc}.", log_path=log_path_of(handle)
        ) from exc


def register(
    admin: httpx.Client, handle: GatewayHandle, url: str, model: str, api_key: str | None, endpoint_id: str
) -> Member:
    body: dict[str, Any] = {"url": url, "model_id": model}
    if api_key:
        body["api_key"] = api_key
    response = admin_call(admin, handle, "POST", "/workers", json=body)
    if response.status_code not in (200, 201, 202):
        raise GatewayError(
            f"The gateway refused worker {url} ({response.status_code}): {response.text[:300]}",
            log_path=log_path_of(handle),
        )
    worker_id = str(response.json()["worker_id"])
    wait_until_registered(admin, handle, worker_id, url)
    return Member(endpoint_id=endpoint_id, worker_id=worker_id, url=url)


def register_endpoint(admin: httpx.Client, handle: GatewayHandle, endpoint: Endpoint) -> Member:
    return register(admin, handle, endpoint.url, endpoint.model, endpoint.api_key, endpoint.id)


def adopt_startup_workers(
    admin: httpx.Client, handle: GatewayHandle, endpoints: Sequence[Endpoint]
) -> list[Member]:
    """Workers given on the command line: find their ids, then give each its key (the command line has
    none)."""
    ids_by_url = _wait_until_listed(admin, handle, [endpoint.url for endpoint in endpoints])
    members = []
    for endpoint in endpoints:
        worker_id = ids_by_url[endpoint.url]
        if endpoint.api_key:
            response = admin_call(
                admin, handle, "PUT", f"/workers/{worker_id}", json={"api_key": endpoint.api_key}
            )
            if response.status_code not in (200, 202):
                raise GatewayError(
                    f"The gateway refused the key of worker {endpoint.url} ({response.status_code}): "
                    f"{response.text[:300]}",
                    log_path=log_path_of(handle),
                )
        wait_until_registered(admin, handle, worker_id, endpoint.url)
        members.append(Member(endpoint_id=endpoint.id, worker_id=worker_id, url=endpoint.url))
    return members


def _wait_until_listed(admin: httpx.Client, handle: GatewayHandle, urls: Sequence[str]) -> dict[str, str]:
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while True:
        listed = {worker["url"]: worker["id"] for worker in listed_workers(admin, handle)}
        if all(url in listed for url in urls):
            return {url: listed[url] for url in urls}
        if time.monotonic() > deadline:
            missing = ", ".join(url for url in urls if url not in listed)
            raise GatewayError(
                f"The gateway did not take up {missing} within {REGISTRATION_TIMEOUT:.0f} s.",
                log_path=log_path_of(handle),
            )
        time.sleep(POLL_SECONDS)


def wait_until_registered(admin: httpx.Client, handle: GatewayHandle, worker_id: str, url: str) -> None:
    """Until the gateway lists the worker as healthy with no job of its own still pending."""
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while True:
        response = admin_call(admin, handle, "GET", f"/workers/{worker_id}")
        if response.status_code == 200:
            worker = response.json()
            job = worker.get("job_status") or {}
            if job.get("status") == "failed":
                raise GatewayError(
                    f"The gateway could not register worker {url}: {job.get('message')}",
                    log_path=log_path_of(handle),
                )
            if worker.get("is_healthy") and job.get("status") not in ("pending", "processing"):
                return
        if time.monotonic() > deadline:
            raise GatewayError(
                f"The gateway did not register worker {url} within {REGISTRATION_TIMEOUT:.0f} s.",
                hint="Check that the gateway can reach the worker's URL.",
                log_path=log_path_of(handle),
            )
        time.sleep(POLL_SECONDS)


def deregister(admin: httpx.Client, handle: GatewayHandle, member: Member) -> None:
    """Until the gateway no longer lists the worker: from then on no new request is routed to it."""
    response = admin_call(admin, handle, "DELETE", f"/workers/{member.worker_id}")
    if response.status_code not in (200, 202, 404):
        raise GatewayError(
            f"The gateway refused to remove worker {member.url} ({response.status_code}): "
            f"{response.text[:300]}",
            log_path=log_path_of(handle),
        )
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while admin_call(admin, handle, "GET", f"/workers/{member.worker_id}").status_code != 404:
        if time.monotonic() > deadline:
            raise GatewayError(
                f"The gateway did not remove worker {member.url} within {REGISTRATION_TIMEOUT:.0f} s.",
                log_path=log_path_of(handle),
            )
        time.sleep(POLL_SECONDS)


def listed_workers(admin: httpx.Client, handle: GatewayHandle) -> list[dict[str, Any]]:
    response = admin_call(admin, handle, "GET", "/workers")
    if response.status_code != 200:
        raise GatewayError(
            f"The gateway did not list its workers ({response.status_code}): {response.text[:300]}",
            log_path=log_path_of(handle),
        )
    return list(response.json().get("workers", []))


def wait_until_generates(admin: httpx.Client, handle: GatewayHandle, model: str) -> None:
    """A real one-token completion through the gateway: its routing, its key and a worker's key all work."""
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    # Chat, not /v1/completions: every engine and stand-in serves chat completions.
    body = {
        "model": model,
        "messages": [{"role": "user", "content": READINESS_PROMPT}],
        "max_tokens": 1,
        "temperature": 0,
    }
    while True:
        response = admin_call(admin, handle, "POST", "/v1/chat/completions", json=body)
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise GatewayError(
                f"No completion went through the gateway within {REGISTRATION_TIMEOUT:.0f} s "
                f"(last answer {response.status_code}: {response.text[:300]}).",
                log_path=log_path_of(handle),
            )
        time.sleep(POLL_SECONDS)
