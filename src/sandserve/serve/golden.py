"""Capturing a spec's golden snapshot at `down`.

Why at `down`: by then the endpoint's users are done with it, so the capture can neither slow the endpoint
nor make it unavailable (whether Daytona's proxy keeps serving while a sandbox is ``snapshotting`` is not
known), and everything the boot wrote (weights, compiled kernels, autotune results) is on disk. A GPU
sandbox is ephemeral, so it cannot be stopped first (a stop deletes it): the capture is taken from the
started sandbox, which bills until the capture ends. Only a cold boot is captured (a warm one came from a
snapshot that exists), and only when the spec allows it (``--no-snapshot`` at `up` or at `down`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandserve.errors import SandserveError
from sandserve.providers import PROVIDER_NAMES, get_provider
from sandserve.providers.base import Provider
from sandserve.providers.warmboot import CaptureOutcome, SnapshotInfo, spec_key, spec_summary
from sandserve.serve import boots
from sandserve.serve.ledger import Record, Registry, State
from sandserve.spec import ServeSpec


def capture_before_down(record: Record, registry: Registry, say: Callable[[str], None]) -> None:
    provider = get_provider(record.provider)
    if not provider.keeps_snapshots or record.state is not State.READY:
        return
    try:
        spec = ServeSpec.from_record(record.spec)
    except (KeyError, TypeError, ValueError):
        return  # a row an older sandserve wrote without the fields a key needs
    receipt = boots.boot_of(registry, record.id)
    warm_boot = spec.provider_settings.warm_boot
    if not warm_boot or not spec.uses_gpu or receipt is None or receipt.origin != "cold":
        return
    say(
        f"capturing the golden snapshot of {record.id} before deleting its sandbox, so the next `up` of "
        "this spec boots warm (the GPU sandbox bills until the capture ends; `down --no-snapshot` skips it)"
    )
    try:
        outcome = provider.capture_snapshot(record.sandbox, spec)
    except SandserveError as exc:
        outcome = CaptureOutcome(f"no snapshot: {exc.message}")
    if outcome.captured:
        gpu_type = outcome.gpu_type or receipt.gpu_type or spec.resources.gpu_types[0]
        boots.record_snapshot(
            registry, outcome.captured, spec_key(spec, gpu_type), spec_summary(spec), record.id, gpu_type
        )
    say(outcome.line)


@dataclass(frozen=True)
class GoldenSnapshot:
    """A golden snapshot as `sandserve snapshots` shows it: the provider's facts and the spec it is for."""

    provider: str
    info: SnapshotInfo
    spec: str | None
    """The spec it was captured for (from this ledger; None: captured elsewhere)."""


def snapshot_providers() -> list[Provider[Any]]:
    return [get_provider(name) for name in PROVIDER_NAMES if get_provider(name).keeps_snapshots]


def golden_snapshots(registry: Registry) -> list[GoldenSnapshot]:
    """Every golden snapshot of every provider that keeps them (asks the provider: it is the truth)."""
    known = boots.snapshot_rows(registry)
    found = []
    for provider in snapshot_providers():
        for info in provider.snapshots():
            row = known.get(info.name)
            found.append(GoldenSnapshot(provider.name, info, row.spec if row else None))
    return found


def delete_golden(name: str, registry: Registry) -> None:
    """Delete a golden snapshot (the next `up` of its spec boots cold and captures a new one)."""
    from sandserve.errors import SnapshotNotFoundError

    providers = snapshot_providers()
    for provider in providers:
        try:
            provider.delete_snapshot(name)
        except SnapshotNotFoundError:
            continue
        boots.forget_snapshot(registry, name)
        return
    raise SnapshotNotFoundError(name)
