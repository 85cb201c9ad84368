"""Where a GPU spec goes before anything is paid for: GPU types that cannot hold the model are dropped (the
fit check), then those the provider says have no free units (its capacity answer, where it has one); what
is left is cut into one create per GPU vendor, each with its own image, tried in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sandserve.errors import GpuCapacityError
from sandserve.providers.base import Provider
from sandserve.serve import fit
from sandserve.serve.footprint import footprint_of
from sandserve.spec import ServeSpec


@dataclass
class Placement:
    spec: ServeSpec
    """The spec with only the GPU types that fit and have capacity."""
    notes: list[str] = field(default_factory=list)
    """What was skipped and why, for the user."""
    fit: dict[str, str] | str = "not checked"
    """Each GPU type's arithmetic, or why the fit was not checked."""
    capacity: dict[str, str] | str = "not checked"
    """Each GPU type's free units, or why they were not asked for."""

    def creates(self) -> list[ServeSpec]:
        """One spec per GPU vendor, in the order of preference: each is one create with its vendor's image."""
        groups = self.spec.resources.by_vendor()
        if len(groups) <= 1:
            return [self.spec]
        resources = self.spec.resources
        return [replace(self.spec, resources=replace(resources, gpu_types=gpus)) for _vendor, gpus in groups]

    def shown(self) -> dict[str, Any]:
        return {"fit": self.fit, "capacity": self.capacity, **({"skipped": self.notes} if self.notes else {})}


def no_capacity(gpus: list[str] | tuple[str, ...], count: int, said: str) -> GpuCapacityError:
    units = f"{count} GPUs" if count > 1 else "a GPU"
    return GpuCapacityError(
        f"No {' or '.join(gpus)} has {units} free right now ({said}).",
        hint="Add other GPU types to the list (--gpu, repeat it), ask for fewer (--gpus), try without "
        "--spot, or try again later: capacity changes by the minute.",
    )


def place(spec: ServeSpec, provider: Provider[Any]) -> Placement:
    """The spec settled for its GPUs; raises ModelDoesNotFitError or GpuCapacityError when nothing is left."""
    if not spec.uses_gpu:
        return Placement(spec, fit="no GPU", capacity="no GPU")
    placed = Placement(spec)
    footprint, source = footprint_of(spec)
    found = fit.check(spec, footprint, source) if footprint else None
    if found is None:
        placed.fit = f"not checked: {source}" if footprint is None else "not checked: the engine uses no GPU"
    else:
        placed.fit = found.summary()
        placed.spec, skipped = fit.settle(spec, found)
        placed.notes += skipped
    free, why_not = provider.gpu_capacity(placed.spec)
    if free is None:
        placed.capacity = f"not checked: {why_not}"
        return placed
    count = placed.spec.resources.gpu_count
    kind = "spot" if placed.spec.resources.spot else "on demand"
    placed.capacity = {gpu: f"{free.get(gpu, 0)} free {kind}" for gpu in placed.spec.resources.gpu_types}
    have = tuple(gpu for gpu in placed.spec.resources.gpu_types if free.get(gpu, 0) >= count)
    lacking = [gpu for gpu in placed.spec.resources.gpu_types if gpu not in have]
    if not have:
        raise no_capacity(lacking, count, f"free {kind}")
    placed.notes += [f"skipping {gpu}: {free.get(gpu, 0)} free {kind}, {count} needed" for gpu in lacking]
    placed.spec = replace(placed.spec, resources=replace(placed.spec.resources, gpu_types=have))
    return placed
