"""Warm boots: what names a golden snapshot, and what a provider decides about one before a boot.

A golden snapshot holds what the next boot of the same spec would otherwise redo (the weights, the engine's
compiled kernels and autotune results). It is named by a hash of everything that makes a boot differ: the
image, the model and its revision, the engine and its flags, and the GPU (vendor, count; one snapshot per
GPU type, since a snapshot records the one GPU type it was taken on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from sandserve.spec import GPU_VENDORS, GpuVendor, ServeSpec

SNAPSHOT_PREFIX = "sandserve-"


def gpu_vendor(gpu_type: str) -> str:
    """A snapshot of an NVIDIA image is no use on an AMD GPU, nor the other way."""
    return str(GPU_VENDORS.get(gpu_type.upper(), GpuVendor.NVIDIA))


def snapshot_key(
    *,
    image: str,
    model: str,
    revision: str | None,
    engine: str,
    engine_args: Sequence[str],
    gpu_vendor: str,
    gpu_count: int,
) -> str:
    """A short hash of what makes one boot's files differ from another's. Plain values, so that it serves
    any spec shape: the image, the model and its revision, the engine and its flags, the GPU's vendor and
    count (the type is in the snapshot's name: one snapshot per type)."""
    identity = {
        "image": image,
        "model": model,
        "revision": revision or "main",
        "engine": engine,
        "engine_args": list(engine_args),
        "gpu_vendor": gpu_vendor,
        "gpu_count": gpu_count,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def spec_key(spec: ServeSpec, gpu_type: str) -> str:
    """The snapshot key of ``spec`` booted on one ``gpu_type``."""
    vendor = gpu_vendor(gpu_type)
    return snapshot_key(
        image=_image(spec, vendor),
        model=spec.model,
        revision=_flag_value(spec.engine_settings.extra_args, "--revision"),
        engine=spec.engine,
        engine_args=_boot_args(spec),
        gpu_vendor=vendor,
        gpu_count=spec.resources.gpu_count,
    )


def snapshot_name(spec: ServeSpec, gpu_type: str) -> str:
    return f"{SNAPSHOT_PREFIX}{spec_key(spec, gpu_type)}-{gpu_type.lower()}"


def spec_summary(spec: ServeSpec) -> str:
    """How `sandserve snapshots` names the spec a snapshot belongs to: the preset (or the model) and the flags
    given (the parsers, which follow the model, left out)."""
    flags = list(spec.engine_settings.extra_args)
    if spec.context_length:
        flags += ["--context-length", str(spec.context_length)]
    if spec.resources.gpu_count > 1:
        flags += [f"x{spec.resources.gpu_count} GPUs"]
    name = spec.served_name if spec.preset else f"{spec.served_name} ({spec.model})"
    return " ".join([name, *flags])


def _boot_args(spec: ServeSpec) -> list[str]:
    """The launch settings that change what the engine compiles or loads (the key, port and host do not)."""
    settings = spec.engine_settings
    args = list(settings.extra_args)
    if spec.context_length:
        args += ["--context-length", str(spec.context_length)]
    for flag, value in (
        ("--reasoning-parser", settings.reasoning_parser),
        ("--tool-call-parser", settings.tool_call_parser),
    ):
        if value:
            args += [flag, value]
    return args


def _image(spec: ServeSpec, vendor: str) -> str:
    """The image a sandbox on this vendor's GPU starts from: the one asked for, else the engine's own."""
    from sandserve.engines import engine_class
    from sandserve.errors import ConfigError

    if spec.resources.image:
        return spec.resources.image
    try:
        return engine_class(spec.engine).sandbox_image(GpuVendor(vendor))
    except ConfigError:  # no stock image for this vendor: such a create is refused before it is made
        return ""


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class SnapshotInfo:
    """One golden snapshot as the provider reports it."""

    name: str
    state: str
    gpu_type: str | None
    size_gb: float | None
    created_at: str | None
    last_used_at: str | None
    error: str | None = None


@dataclass(frozen=True)
class CaptureOutcome:
    """How a capture ended: one line for the user, and the snapshot's name when one was made."""

    line: str
    captured: str | None = None
    gpu_type: str | None = None


@dataclass(frozen=True)
class WarmBootPlan:
    """Whether a boot will start from a golden snapshot, and why (or why not)."""

    snapshot: str | None
    gpu_type: str | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def warm(self) -> bool:
        return self.snapshot is not None

    def line(self) -> str:
        """One line for the dry run and the boot's progress."""
        if self.warm:
            notes = "".join(f"; {reason}" for reason in self.reasons)
            return f"warm: from snapshot {self.snapshot} ({self.gpu_type}){notes}"
        return "cold: " + ("; ".join(self.reasons) or "no golden snapshot")

    def falling_back(self, reason: str) -> WarmBootPlan:
        return WarmBootPlan(None, None, (*self.reasons, reason))


def boot_key(spec: ServeSpec, gpu_type: str | None) -> str:
    """What boot receipts are compared by: the snapshot key on a GPU type, else the spec's with no GPU."""
    if gpu_type:
        return spec_key(spec, gpu_type)
    return snapshot_key(
        image=spec.resources.image or "",
        model=spec.model,
        revision=_flag_value(spec.engine_settings.extra_args, "--revision"),
        engine=spec.engine,
        engine_args=_boot_args(spec),
        gpu_vendor="none",
        gpu_count=0,
    )
