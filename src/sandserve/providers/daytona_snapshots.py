"""Golden snapshots on Daytona, through the real SDK: find one for a spec, capture one, list and delete them.

Facts (SDK 0.226.1, the open-source API; facts/daytona.md): `sandbox.create_snapshot(name)` captures the
sandbox's filesystem (started or stopped; it goes to ``snapshotting`` and back); a snapshot records the GPU
count and type of the sandbox it was taken from, and a create from it gets exactly that GPU (the SDK's
`CreateSandboxFromSnapshotParams` takes no resources; the API takes the snapshot's and schedules on a runner
of its GPU type). So sandserve keeps one snapshot per GPU type and walks the user's GPU preference list in
order: the first type with an active snapshot boots warm (a warm boot on the second choice beats a cold one
on the first). An unused snapshot goes inactive after two weeks and is activated again here.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from typing import TYPE_CHECKING, Any

from sandserve import config
from sandserve.providers.warmboot import (
    SNAPSHOT_PREFIX,
    CaptureOutcome,
    SnapshotInfo,
    WarmBootPlan,
    snapshot_name,
)
from sandserve.spec import ServeSpec

if TYPE_CHECKING:
    from daytona import Daytona, Sandbox

#: The stock SGLang CUDA image's compressed size: a capture carries its layers besides the new files.
SGLANG_IMAGE_GB = 11.0
#: Where the engine's caches go inside the sandbox, under the sandbox user's home.
CACHE_DIR = ".cache/sandserve"
HF_CACHE_DIR = ".cache/huggingface"
#: Seconds a capture may take ("can take several minutes": the runner commits and pushes the container).
CAPTURE_TIMEOUT = 1800.0
ACTIVATE_TIMEOUT = 120.0


def plan(client: Daytona, spec: ServeSpec, *, activate: bool) -> WarmBootPlan:
    """The first GPU type of the preference list with a usable snapshot, or why none is usable. With
    ``activate``, an inactive snapshot is activated (and waited for); a dry run only says so."""
    from daytona import DaytonaNotFoundError

    reasons: list[str] = []
    missing: list[str] = []
    for gpu_type in spec.resources.gpu_types:
        name = snapshot_name(spec, gpu_type)
        try:
            snapshot = client.snapshot.get(name)
        except DaytonaNotFoundError:
            missing.append(gpu_type)
            continue
        state = _state(snapshot)
        if state == "active":
            return WarmBootPlan(name, gpu_type, (*_missing(missing), *reasons))
        if state == "inactive":
            if not activate:
                inactive = f"snapshot {name} is inactive: `up` activates it"
                return WarmBootPlan(name, gpu_type, (*_missing(missing), *reasons, inactive))
            reason = _activate(client, name)
            if reason is None:
                activated = f"snapshot {name} was inactive: activated"
                return WarmBootPlan(name, gpu_type, (*_missing(missing), *reasons, activated))
            reasons.append(reason)
        elif state in ("error", "build_failed"):
            why = getattr(snapshot, "error_reason", None) or "no reason given"
            reasons.append(f"snapshot {name} failed ({why}): `sandserve snapshots delete {name}`")
        else:
            reasons.append(f"snapshot {name} is {state}, not active yet")
    return WarmBootPlan(None, None, (*_missing(missing, cold=True), *reasons))


def _missing(gpu_types: list[str], *, cold: bool = False) -> tuple[str, ...]:
    if not gpu_types:
        return ()
    where = " or ".join(gpu_types)
    return (f"no snapshot of this spec on {where} yet" + (" (one is captured at `down`)" if cold else ""),)


def _activate(client: Daytona, name: str) -> str | None:
    from daytona import DaytonaError

    try:
        client.snapshot.activate(name)
        deadline = time.monotonic() + ACTIVATE_TIMEOUT
        while time.monotonic() < deadline:
            state = _state(client.snapshot.get(name))
            if state == "active":
                return None
            if state in ("error", "build_failed"):
                return f"snapshot {name} failed while being activated"
            time.sleep(1.0)
    except DaytonaError as exc:
        return f"snapshot {name} is inactive and could not be activated ({exc})"
    return f"snapshot {name} is inactive and was not active {ACTIVATE_TIMEOUT:.0f} s after activating"


def is_snapshot_refusal(exc: Exception, name: str) -> bool:
    """Whether a create was refused because of its snapshot (gone, inactive, failed since the plan)."""
    message = str(exc)
    return f"Snapshot {name}" in message or f"snapshot {name}" in message


def sandbox_home(sandbox: Sandbox) -> str:
    return sandbox.get_user_home_dir().rstrip("/") or "/root"


def capture(client: Daytona, sandbox: Sandbox, spec: ServeSpec) -> CaptureOutcome:
    line, name, gpu_type = _capture(client, sandbox, spec)
    return CaptureOutcome(line, name, gpu_type)


def _capture(client: Daytona, sandbox: Sandbox, spec: ServeSpec) -> tuple[str, str | None, str | None]:
    """Capture the golden snapshot of ``spec`` from ``sandbox``; what happened, as one line. Never raises
    for the snapshot's sake: the sandbox is deleted afterwards whatever this says."""
    from daytona import DaytonaError, DaytonaNotFoundError

    gpu_type = _value(getattr(sandbox, "gpu_type", None)) or (spec.resources.gpu_types or (None,))[0]
    if gpu_type is None:
        return "no snapshot: the sandbox has no GPU", None, None
    name = snapshot_name(spec, gpu_type)
    try:
        existing = client.snapshot.get(name)
    except DaytonaNotFoundError:
        existing = None
    except DaytonaError as exc:
        return f"no snapshot: Daytona could not be asked for {name} ({exc})", None, None
    if existing is not None:
        if _state(existing) not in ("error", "build_failed"):
            return f"snapshot {name} already exists ({_state(existing)})", None, None
        with contextlib.suppress(DaytonaError):
            client.snapshot.delete(name)  # a failed one is replaced
    limit = config.snapshot_limit_gb()
    size = estimate_gb(sandbox)
    if size is not None and limit is not None and size > limit.value:
        return (
            f"no snapshot: about {size:.1f} GB (the image's {SGLANG_IMAGE_GB:g} GB, the weights and the "
            f"kernel caches) is over the organisation's snapshot size limit of {limit.value:g} GB "
            f"({limit.source})",
            None,
            None,
        )
    try:
        sandbox.create_snapshot(name, timeout=CAPTURE_TIMEOUT)
        snapshot = _settled(client, name)
    except DaytonaError as exc:
        return f"no snapshot: Daytona refused to capture {name}: {exc}", None, None
    state = _state(snapshot) if snapshot is not None else "missing"
    if state != "active":
        why = getattr(snapshot, "error_reason", None) if snapshot is not None else None
        line = f"no snapshot: the capture of {name} ended {state}" + (f" ({why})" if why else "")
        if why and "size" in why.lower():
            line += "; set SANDSERVE_SNAPSHOT_LIMIT_GB to the organisation's limit to skip such captures"
        return line, None, None
    return f"captured snapshot {name} ({_size_text(getattr(snapshot, 'size', None))})", name, gpu_type


def restored(sandbox: Sandbox, spec: ServeSpec) -> frozenset[str]:
    """Which boot steps the sandbox's files already cover: ``weights`` (the model in the Hugging Face cache)
    and ``compile`` (the engine's caches), as a snapshot brings them; looked at before the server starts."""
    from daytona import DaytonaError

    home = sandbox_home(sandbox)
    weights = shlex.quote(f"{home}/{HF_CACHE_DIR}/hub/models--{spec.model.replace('/', '--')}")
    caches = shlex.quote(f"{home}/{CACHE_DIR}")
    command = (
        f'test -n "$(ls -A {weights}/snapshots 2>/dev/null)" && echo weights; '
        f'test -n "$(ls -A {caches} 2>/dev/null)" && echo compile; true'
    )
    try:
        result = sandbox.process.exec(command, timeout=60)
    except DaytonaError:
        return frozenset()
    return frozenset(word for word in (result.result or "").split() if word in ("weights", "compile"))


def estimate_gb(sandbox: Sandbox) -> float | None:
    """The capture's size before it is made: the image's layers and what the boot wrote (weights, caches)."""
    from daytona import DaytonaError

    home = sandbox_home(sandbox)
    paths = " ".join(shlex.quote(f"{home}/{part}") for part in (HF_CACHE_DIR, CACHE_DIR))
    try:
        result = sandbox.process.exec(f"du -sbc {paths} 2>/dev/null | tail -n 1", timeout=120)
        total = int((result.result or "0").split()[0])
    except (DaytonaError, ValueError, IndexError):
        return None
    return SGLANG_IMAGE_GB + total / 1e9


def _settled(client: Daytona, name: str) -> Any:
    """The snapshot once it is active or failed (the SDK waited for the sandbox, not the snapshot)."""
    from daytona import DaytonaNotFoundError

    deadline = time.monotonic() + CAPTURE_TIMEOUT
    snapshot = None
    while time.monotonic() < deadline:
        try:
            snapshot = client.snapshot.get(name)
        except DaytonaNotFoundError:
            snapshot = None
        else:
            if _state(snapshot) in ("active", "error", "build_failed"):
                return snapshot
        time.sleep(0.5)
    return snapshot


def listing(client: Daytona) -> list[SnapshotInfo]:
    """sandserve's golden snapshots in the organisation (by name), every page."""
    found: list[SnapshotInfo] = []
    page = 1
    while True:
        result = client.snapshot.list(page=page, limit=100)
        for snapshot in result.items:
            if snapshot.name.startswith(SNAPSHOT_PREFIX):
                found.append(
                    SnapshotInfo(
                        name=snapshot.name,
                        state=_state(snapshot),
                        gpu_type=_value(getattr(snapshot, "gpu_type", None)),
                        size_gb=float(snapshot.size) if snapshot.size is not None else None,
                        created_at=_stamp(snapshot.created_at),
                        last_used_at=_stamp(snapshot.last_used_at),
                        error=getattr(snapshot, "error_reason", None),
                    )
                )
        if page >= (result.total_pages or 1):
            return found
        page += 1


def _state(snapshot: Any) -> str:
    return str(_value(snapshot.state)).lower()


def _value(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _stamp(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _size_text(size: Any) -> str:
    return f"{float(size):.1f} GB" if size is not None else "size not reported"
