"""Fit before paying: does the model fit the GPUs asked for, before a sandbox is created?

Per GPU, the engine's share of its memory (SGLang's ``mem_fraction_static``, as SGLang computes it) must hold
the model's weights (split over the GPUs of one copy) and a KV cache of at least one request of the context
it is served with (``--context-length``, else the model's own window up to ``KV_FLOOR_TOKENS``). A GPU type
that cannot is dropped from the preference list; when none can, the spec is refused with the arithmetic and
the smallest GPU type and count that would fit. The figures are estimates (file sizes, 16-bit KV cache): a
model that fits by a hair may still fail, one refused here would not have booted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sandserve.engines import engine_class
from sandserve.engines.base import Engine
from sandserve.errors import ModelDoesNotFitError
from sandserve.presets import Footprint
from sandserve.spec import GPU_MEMORY_MIB, GPU_TYPES, MAX_GPUS_PER_SANDBOX, ServeSpec

GIB = 2**30
#: The KV cache must hold at least this much of one request when no --context-length says otherwise (the
#: server still starts with a model's longer window: longer requests are then refused, not crashed).
KV_FLOOR_TOKENS = 32_768
#: GPU counts a sandbox is offered in, smallest first (tensor parallel splits evenly over powers of two).
GPU_COUNTS = tuple(count for count in (1, 2, 4, 8) if count <= MAX_GPUS_PER_SANDBOX)


@dataclass(frozen=True)
class GpuFit:
    """One GPU type and count against the model: bytes per GPU."""

    gpu: str
    count: int
    share: int
    """What the engine gives to weights and KV cache on each GPU."""
    weights: int
    kv_needed: int
    kv_per_token: int | None

    @property
    def fits(self) -> bool:
        return self.weights + self.kv_needed <= self.share

    @property
    def kv_pool_tokens(self) -> int | None:
        """Tokens the KV cache would hold (per copy of the model)."""
        if not self.kv_per_token:
            return None
        return max(0, (self.share - self.weights) // self.kv_per_token)

    @property
    def gpus(self) -> str:
        return f"{self.count} x {self.gpu}"

    def arithmetic(self) -> str:
        """``2 x H100: 65.7 GiB weights + 2.5 GiB KV = 68.2 GiB of 65.9 GiB per GPU: does not fit``."""
        return f"{self.gpus}: {self.sums()}"

    def sums(self) -> str:
        """``65.7 GiB weights + 2.5 GiB KV = 68.2 GiB > 65.9 GiB per GPU``."""
        kv = f" + {_gib(self.kv_needed)} KV" if self.kv_needed else ""
        total = _gib(self.weights + self.kv_needed)
        room = f"of {_gib(self.share)}" if self.fits else f"> {_gib(self.share)}"
        return f"{_gib(self.weights)} weights{kv} = {total} {room} per GPU"


@dataclass(frozen=True)
class FitCheck:
    """The model against each GPU type asked for."""

    footprint: Footprint
    source: str
    """Where the footprint came from (the preset, the Hugging Face API)."""
    kv_tokens: int
    """Tokens of KV cache the check asks for."""
    fits: tuple[GpuFit, ...]

    @property
    def fitting(self) -> tuple[str, ...]:
        return tuple(fit.gpu for fit in self.fits if fit.fits)

    def summary(self) -> dict[str, str]:
        """One line per GPU type, for the plan."""
        lines = {}
        for fit in self.fits:
            if not fit.fits:
                lines[fit.gpus] = f"too small: {fit.sums()}"
                continue
            pool = fit.kv_pool_tokens
            room = f", KV pool about {_tokens(pool)} tokens" if pool is not None else ""
            lines[fit.gpus] = f"fits: {_gib(fit.weights + fit.kv_needed)} of {_gib(fit.share)} per GPU{room}"
        return lines


def check(spec: ServeSpec, footprint: Footprint, source: str) -> FitCheck | None:
    """The model against each of the spec's GPU types; None when the engine runs on no GPU."""
    engine = engine_class(spec.engine)
    kv_tokens = _kv_tokens(spec, footprint)
    fits = []
    for gpu in spec.resources.gpu_types:
        fit = _fit(engine, spec, footprint, gpu, spec.resources.gpu_count, kv_tokens)
        if fit is None:
            return None
        fits.append(fit)
    return FitCheck(footprint, source, kv_tokens, tuple(fits))


def settle(spec: ServeSpec, found: FitCheck) -> tuple[ServeSpec, list[str]]:
    """The spec with the GPU types that cannot hold the model dropped, and a note for each; refused when
    none can."""
    if not found.fitting:
        lines = "".join(f"\n  {fit.arithmetic()}" for fit in found.fits)
        smallest = _smallest_fit(spec, found)
        raise ModelDoesNotFitError(
            f"{spec.served_name} does not fit the GPUs asked for. Per GPU, its weights and KV cache against "
            f"what the engine gives them (sizes from {found.source}):{lines}",
            hint=f"The smallest that fits: {smallest}. Or serve a smaller model (`sandserve presets`)."
            if smallest
            else "No GPU type on offer holds it, even 8 of them: serve a smaller or quantized model.",
        )
    notes = [f"skipping {fit.arithmetic()}" for fit in found.fits if not fit.fits]
    resources = replace(spec.resources, gpu_types=found.fitting)
    return replace(spec, resources=resources), notes


def _fit(
    engine: type[Engine], spec: ServeSpec, footprint: Footprint, gpu: str, count: int, kv_tokens: int
) -> GpuFit | None:
    sized = replace(spec, resources=replace(spec.resources, gpu_types=(gpu,), gpu_count=count))
    share = engine.gpu_share_bytes(sized, GPU_MEMORY_MIB[gpu])
    if share is None:
        return None
    # Tensor parallel splits one copy over every GPU; data parallel puts a whole copy on each.
    split = 1 if spec.engine_settings.data_parallel else count
    kv_per_token = footprint.kv_bytes_per_token // split if footprint.kv_bytes_per_token else None
    return GpuFit(
        gpu=gpu,
        count=count,
        share=share,
        weights=footprint.weights_bytes // split,
        kv_needed=(kv_per_token or 0) * kv_tokens,
        kv_per_token=kv_per_token,
    )


def needed_bytes(footprint: Footprint, context_length: int | None) -> int:
    """GPU memory in all for the weights and the KV cache the check asks for (``presets`` shows it)."""
    tokens = context_length or min(footprint.context_tokens or KV_FLOOR_TOKENS, KV_FLOOR_TOKENS)
    return footprint.weights_bytes + (footprint.kv_bytes_per_token or 0) * tokens


def _kv_tokens(spec: ServeSpec, footprint: Footprint) -> int:
    if spec.context_length:
        return spec.context_length
    return min(footprint.context_tokens or KV_FLOOR_TOKENS, KV_FLOOR_TOKENS)


def _smallest_fit(spec: ServeSpec, found: FitCheck) -> str | None:
    """The GPU type and count with the least memory in all that would hold the model (fewest GPUs first
    among equals), as ``--gpu`` / ``--gpus`` flags."""
    engine = engine_class(spec.engine)
    options = [
        fit
        for gpu in GPU_TYPES
        for count in GPU_COUNTS
        if (fit := _fit(engine, spec, found.footprint, gpu, count, found.kv_tokens)) and fit.fits
    ]
    if not options:
        return None
    best = min(options, key=lambda fit: (GPU_MEMORY_MIB[fit.gpu] * fit.count, fit.count))
    return (
        f"--gpu {best.gpu} --gpus {best.count} ({_gib(best.weights + best.kv_needed)} of {_gib(best.share)})"
    )


def _tokens(count: int) -> str:
    return f"{count / 1e6:.1f} M" if count >= 1_000_000 else f"{count / 1e3:.0f} k"


def _gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"
