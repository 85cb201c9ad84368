"""The pipeline every provider shares: create -> start -> wait -> handoff, and down.

``up`` returns only when a real generation has succeeded. While waiting it hands the server's new log text to
the caller, notices at once when the server dies (saving the whole log and naming the cause), and on a timeout
or Ctrl-C cleans up so that nothing keeps running unseen. Every step is written to the ledger first.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandserve.endpoint import Endpoint
from sandserve.engines import Engine, diagnose, get_engine, phases_in
from sandserve.errors import (
    BootInterruptedError,
    BootTimeoutError,
    EngineDiedError,
    GpuCapacityError,
    LedgerBusyError,
    SandserveError,
)
from sandserve.paths import logs_dir
from sandserve.providers import get_provider
from sandserve.providers.base import Exposure, Provider
from sandserve.providers.handles import SandboxHandle
from sandserve.providers.warmboot import boot_key
from sandserve.results import ServerInfo
from sandserve.serve import boots, breaker
from sandserve.serve.boot_events import BootEvents, BootTimeline
from sandserve.serve.ledger import Record, Registry, State
from sandserve.serve.liveness import reconcile as reconcile
from sandserve.serve.liveness import refresh as refresh
from sandserve.serve.placement import place
from sandserve.serve.receipt import receipt_from
from sandserve.spec import ServeSpec
from sandserve.tls import tls_context

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

#: A fatal signature in the log with the process still up: SGLang's parent can linger after its scheduler
#: died.
FATAL_LOG_GRACE_SECONDS = 5.0


def new_endpoint_id(spec: ServeSpec) -> str:
    import secrets

    return f"{spec.served_name.lower()}-{secrets.token_hex(3)}"


def up(
    spec: ServeSpec,
    *,
    events: BootEvents | None = None,
    registry: Registry | None = None,
    force: bool = False,
) -> Endpoint:
    """Bring ``spec`` to a live endpoint and record it in the ledger. ``force``: boot even a spec that failed
    to boot several times in a row (the breaker, ``sandserve.serve.breaker``).

    Every ledger write after the server started is covered: if one fails (a ledger busy past its wait, a full
    disk), the server is stopped, so nothing runs unrecorded; a row an interrupted ``up`` leaves ``booting``
    is settled later by ``reconcile``."""
    events = events or BootEvents()
    registry = registry or Registry()
    timeline = BootTimeline()
    breaker.check(spec, registry, force=force)
    provider = get_provider(spec.provider)
    unprepared = get_engine(spec.engine)
    # resolve_spec checked already; a spec made otherwise is checked before anything is built or created.
    provider.check_engine(type(unprepared), spec.model)
    spec, engine = unprepared.prepare(spec, events)
    for warning in provider.preflight(spec) or ():
        events.warning(warning)
    placed = place(spec, provider)
    for note in placed.notes:
        events.status(note)
    if isinstance(placed.fit, str) and spec.uses_gpu:
        events.warning(f"fit {placed.fit}")
    spec = placed.spec
    events.confirm(spec)
    endpoint_id = new_endpoint_id(spec)
    handle = SandboxHandle(provider.name, sandbox_id="")
    registry.add(
        endpoint_id,
        provider=provider.name,
        engine=engine.name,
        model=spec.served_name,
        spec=spec.to_record(),
        sandbox=handle,
    )
    try:
        spec, handle, why = _create(provider, placed.creates(), endpoint_id, events)
        registry.update(endpoint_id, sandbox=handle, spec=spec.to_record())
        timeline.mark("sandbox ready", events)

        launch = engine.launch(
            spec, host=provider.bind_host, port=provider.server_port(handle), api_key=spec.api_key
        )
        cache_root = provider.cache_root(handle)
        if cache_root:  # the engine's compiled kernels where a snapshot of the sandbox keeps them
            launch = dataclasses.replace(launch, env={**engine.cache_env(cache_root), **launch.env})
        restored = provider.restored_steps(handle, spec)
        events.status("starting the server: " + launch.display_command())
        provider.start(handle, launch)
        exposure = provider.expose(handle, spec)
        # Recorded before the wait: a killed `up` leaves a row that can still be settled (``reconcile``).
        endpoint = _endpoint(endpoint_id, spec, engine, provider, handle, exposure, ServerInfo())
        registry.update(endpoint_id, sandbox=handle, endpoint=endpoint)

        events.status(f"waiting for a real generation (up to {spec.boot_timeout:.0f} s)")
        log_text = _wait_until_ready(spec, engine, provider, handle, exposure, timeline, events, endpoint_id)
        timeline.mark("ready", events)
        server_info = _server_info(engine, exposure)
        endpoint.info = server_info.with_values(
            kv_pool_tokens=engine.kv_pool_tokens(log_text) or server_info.max_total_num_tokens,
            boot_timeline=tuple(timeline.phases),
            capabilities=server_info.capabilities or engine.capabilities,
            preset=spec.preset,
            model_path=spec.model,
        )
        registry.update(
            endpoint_id, state=State.READY, endpoint=endpoint, sandbox=handle, log_path=handle.log_path
        )
        endpoint.ledger = registry
        _receipt(registry, endpoint_id, spec, engine, provider, handle, timeline, (why, restored), events)
    except KeyboardInterrupt:
        log_path = _save_log(endpoint_id, provider, handle)
        _delete_quietly(provider, handle)
        _record_quietly(
            registry, endpoint_id, state=State.DOWN, error="interrupted while booting", log_path=log_path
        )
        raise BootInterruptedError(endpoint_id=endpoint_id, log_path=log_path) from None
    except SandserveError as exc:
        log_path = getattr(exc, "log_path", None) or _save_log(endpoint_id, provider, handle)
        cleanup = (
            spec.delete_on_failure
            or not provider.keeps_failed_sandboxes
            or not handle.sandbox_id
            or isinstance(exc, LedgerBusyError)
        )
        if cleanup:
            _delete_quietly(provider, handle)
        if not isinstance(exc, LedgerBusyError):  # a busy ledger would only make us wait again
            _record_quietly(
                registry,
                endpoint_id,
                state=State.DOWN if cleanup else State.FAILED,
                error=exc.message,
                log_path=log_path,
            )
        raise
    except Exception as exc:
        # Anything unforeseen (the ledger's disk full...): stop what runs rather than leave it unrecorded.
        _delete_quietly(provider, handle)
        _record_quietly(registry, endpoint_id, state=State.DOWN, error=f"{type(exc).__name__}: {exc}")
        raise
    return endpoint


def _create_one(
    provider: Provider[Any], spec: ServeSpec, endpoint_id: str, events: BootEvents
) -> tuple[SandboxHandle, str]:
    """The sandbox, from the spec's golden snapshot where there is a usable one; and why it is warm or
    cold, in one line."""
    plan = provider.warm_boot_plan(spec)
    if plan is None:
        return provider.create(spec, endpoint_id), "cold: the provider keeps no snapshots"
    events.status(plan.line())
    if not plan.warm:
        return provider.create(spec, endpoint_id), plan.line()
    handle = provider.create_warm(spec, endpoint_id, plan)
    fallback = handle.extra.pop("warm_boot_fallback", None)
    if fallback:
        events.warning(f"booting cold from the image: {fallback}")
        return handle, f"cold: {fallback}"
    return handle, plan.line()


def _receipt(
    registry: Registry,
    endpoint_id: str,
    spec: ServeSpec,
    engine: Engine,
    provider: Provider[Any],
    handle: SandboxHandle,
    timeline: BootTimeline,
    why_and_restored: tuple[str, frozenset[str]],
    events: BootEvents,
) -> None:
    """Write the boot's receipt to the ledger and hand it, with the previous one of the spec, to events."""
    why, restored = why_and_restored
    snapshot, gpu_type = provider.warm_boot(handle)
    receipt = receipt_from(
        timeline.phases,
        engine.receipt_steps,
        origin="warm" if snapshot else "cold",
        why=why,
        gpu_type=gpu_type,
        restored=restored,
    )
    key = boot_key(spec, gpu_type)
    previous = boots.last_boot(registry, key)
    boots.record_boot(registry, endpoint_id, key, receipt)
    events.receipt(receipt, previous)


def _endpoint(
    endpoint_id: str,
    spec: ServeSpec,
    engine: Engine,
    provider: Provider[Any],
    handle: SandboxHandle,
    exposure: Exposure,
    info: ServerInfo,
) -> Endpoint:
    return Endpoint(
        id=endpoint_id,
        url=exposure.url,
        model=spec.served_name,
        engine=engine.name,
        provider=provider.name,
        auth=provider.auth_label(spec),
        headers=exposure.headers,
        api_key=exposure.api_key,
        token_header=exposure.token_header,
        probe_headers=exposure.probe_headers,
        sandbox_id=handle.sandbox_id,
        expires_at=exposure.expires_at,
        info=info,
    )


def _create(
    provider: Provider[Any], attempts: list[ServeSpec], endpoint_id: str, events: BootEvents
) -> tuple[ServeSpec, SandboxHandle, str]:
    """The first create that succeeds, one per GPU vendor in order (each with its own image and its own
    golden snapshot): a vendor with nothing free moves on to the next, and says so. Also why the boot is
    warm or cold."""
    for index, attempt in enumerate(attempts):
        gpus = " or ".join(attempt.resources.gpu_types)
        events.status(f"creating {provider.name} sandbox" + (f" ({gpus})" if gpus else ""))
        try:
            handle, why = _create_one(provider, attempt, endpoint_id, events)
            return attempt, handle, why
        except GpuCapacityError as exc:
            if index + 1 == len(attempts):
                raise
            following = " or ".join(attempts[index + 1].resources.gpu_types)
            events.status(f"{exc.message} Trying {following} next.")
    raise AssertionError("no create was attempted")  # pragma: no cover - placement gives one at least


def _record_quietly(registry: Registry, endpoint_id: str, **changes: Any) -> None:
    """Record how a boot ended; if even that fails, the row stays ``booting`` and ``reconcile`` settles it
    once this process has ended (the error that ended the boot is the one worth raising)."""
    try:
        registry.update(endpoint_id, **changes)
    except Exception:
        pass


def _wait_until_ready(
    spec: ServeSpec,
    engine: Engine,
    provider: Provider[Any],
    handle: SandboxHandle,
    exposure: Exposure,
    timeline: BootTimeline,
    events: BootEvents,
    endpoint_id: str,
) -> str:
    import httpx  # here, not at the top: `ls`, `env` and `down` never pay for it

    deadline = time.monotonic() + spec.boot_timeout
    shown = 0
    fatal_seen_at: float | None = None
    log_text = ""
    with httpx.Client(timeout=10.0, headers=exposure.probe_request_headers(), verify=tls_context()) as http:
        while True:
            log_text = provider.read_log(handle)
            if len(log_text) > shown:
                events.log(log_text[shown:])
                shown = len(log_text)
            for phase in phases_in(engine, log_text):
                timeline.mark(phase, events)

            exit_code = provider.exit_code(handle)
            diagnosis = diagnose(engine, log_text)
            if diagnosis and fatal_seen_at is None:
                fatal_seen_at = time.monotonic()
            lingering = (
                fatal_seen_at is not None and time.monotonic() - fatal_seen_at > FATAL_LOG_GRACE_SECONDS
            )
            if exit_code is not None or lingering:
                log_text = provider.read_log(handle)
                if len(log_text) > shown:
                    events.log(log_text[shown:])
                diagnosis = diagnose(engine, log_text)
                raise EngineDiedError(
                    exit_code=exit_code,
                    diagnosis=diagnosis.summary if diagnosis else None,
                    fix=diagnosis.fix if diagnosis else None,
                    log_path=_save_log(endpoint_id, provider, handle, log_text),
                    endpoint_id=endpoint_id,
                )
            if _generates(http, exposure.url, engine):
                return _final_log(provider, handle, engine, timeline, events, shown)
            if time.monotonic() > deadline:
                raise BootTimeoutError(
                    seconds=spec.boot_timeout,
                    log_path=_save_log(endpoint_id, provider, handle, log_text),
                    endpoint_id=endpoint_id,
                )
            time.sleep(provider.poll_interval)


def _final_log(
    provider: Provider[Any],
    handle: SandboxHandle,
    engine: Engine,
    timeline: BootTimeline,
    events: BootEvents,
    shown: int,
) -> str:
    """The log once the server generates: lines written since the last poll still count for the timeline."""
    log_text = provider.read_log(handle)
    if len(log_text) > shown:
        events.log(log_text[shown:])
    for phase in phases_in(engine, log_text):
        timeline.mark(phase, events)
    return log_text


def _server_info(engine: Engine, exposure: Exposure) -> ServerInfo:
    """What the server says of its capacity (KV pool, requests at once); nothing if it will not say."""
    import httpx

    try:
        response = httpx.get(
            exposure.url + engine.info_path,
            headers=exposure.probe_request_headers(),
            timeout=10.0,
            verify=tls_context(),
        )
        response.raise_for_status()
        return engine.summarise_info(response.json())
    except (httpx.HTTPError, ValueError, AttributeError, TypeError):
        return ServerInfo()


def _generates(http: httpx.Client, url: str, engine: Engine) -> bool:
    import httpx

    probe = engine.readiness
    try:
        response = http.request(probe.method, url + probe.path, json=probe.json)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _save_log(
    endpoint_id: str, provider: Provider[Any], handle: SandboxHandle, text: str | None = None
) -> Path | None:
    """The whole server log, kept in the state directory (a local server already writes it there)."""
    if handle.log_path:
        return Path(handle.log_path)
    if not handle.sandbox_id:
        return None
    try:
        text = provider.read_log(handle) if text is None else text
    except Exception:
        return None
    path = logs_dir() / f"{endpoint_id}.log"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _delete_quietly(provider: Provider[Any], handle: SandboxHandle) -> None:
    try:
        provider.delete(handle)
    except Exception:
        pass


# --- the ledger verbs ---------------------------------------------------------------------------------


def read_log(record: Record) -> str:
    if record.log_path and Path(record.log_path).exists():
        return Path(record.log_path).read_text(errors="replace")
    if record.sandbox.sandbox_id and record.state is not State.DOWN:
        return get_provider(record.provider).read_log(record.sandbox)
    return ""


def down(
    record: Record,
    registry: Registry,
    *,
    capture: bool = True,
    on_capture: Callable[[str], None] | None = None,
) -> None:
    """Stop the endpoint's server and delete its sandbox; the ledger keeps the row, marked down. A fleet's
    gateway goes first (no new requests reach its workers), then each of its workers. With ``capture``, a
    cold-booted endpoint's golden snapshot is taken first (``serve.golden``); ``on_capture`` hears when a
    capture starts and how it ended."""
    if record.sandbox.sandbox_id:
        if capture:
            from sandserve.serve.golden import capture_before_down

            capture_before_down(record, registry, on_capture or (lambda line: None))
        get_provider(record.provider).delete(record.sandbox)
    registry.update(record.id, state=State.DOWN)
    failures: list[SandserveError] = []
    for member in registry.members_of(record.id):
        try:
            down(member, registry, capture=capture, on_capture=on_capture)
        except SandserveError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
