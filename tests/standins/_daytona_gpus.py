"""GPUs as the Daytona API hands them out, for the stand-in: how many a sandbox may take, the shared fleet's
free units per type (``GET /organizations/{id}/gpu-capacity``), placement in preference order, and what a
sandbox's processes find on their machine.

- Count: the last public API code (daytonaio/daytona, frozen June 2026) validates ``gpu`` with ``@Min(0)
  @Max(1)``; Daytona's GPU page since says a sandbox takes "one or more NVIDIA or AMD GPUs" and the SDK's
  ``Resources(gpu=N)`` sends any count. The stand-in takes up to ``MAX_GPUS`` (one machine's eight) and
  refuses more with the validator's sentence.
- Placement: "the scheduler tries each [gpuType] in order and pins the sandbox to the first that has
  capacity" (the CreateSandbox model's own description). No type with ``gpu`` units free: 400 "No available
  runners" (the API's RunnerService). A sandbox's units are free again once it is destroyed.
- Capacity: ``GpuCapacityResponse`` from the SDK's models: ``availableOnDemand`` counts units spot sandboxes
  hold (immediately reclaimable), ``availableSpot`` only units nobody holds.
- The machine: a sandbox's processes get ``DAYTONA_STANDIN_GPU_TYPE``, ``DAYTONA_STANDIN_GPU_COUNT`` and
  ``DAYTONA_STANDIN_IMAGE`` (what torch and the image would tell the engine there), so the SGLang stand-in
  fails as SGLang does on the wrong vendor's image or with more ranks than GPUs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daytona_api_client import ApiKeyList, GpuCapacity, GpuCapacityResponse, GpuType

MAX_GPUS = 8
NO_RUNNER_MESSAGE = "No available runners"
#: Units of each type free when a test does not say.
DEFAULT_FREE = 8
_FROM = re.compile(r"^\s*FROM\s+(\S+)", re.MULTILINE | re.IGNORECASE)


class NoRunner(Exception):
    """No GPU type in the list has the units free."""


@dataclass
class Units:
    total: int
    on_demand: int = 0
    """Held by on-demand sandboxes."""
    spot: int = 0
    """Held by spot sandboxes (reclaimable: they still count as free for on-demand)."""


class GpuFleet:
    """The shared fleet's GPUs by type."""

    def __init__(self, total: Mapping[str, int] | None = None, *, answer_seconds: float = 0.0) -> None:
        types = [gpu.value for gpu in GpuType if gpu is not GpuType.UNKNOWN_DEFAULT_OPEN_API]
        self.units = {gpu: Units((total or {}).get(gpu, DEFAULT_FREE)) for gpu in types}
        #: How long a capacity answer is served again ("Responses may be cached for up to five seconds": a
        #: test sets it to see a create refused for want of units the answer still showed free).
        self.answer_seconds = answer_seconds
        self._answer: tuple[float, GpuCapacityResponse] | None = None

    def set_total(self, gpu: str, total: int) -> None:
        """How many units of ``gpu`` the fleet has (0: none free, whatever is asked)."""
        self.units[gpu].total = total

    def free(self, gpu: str, *, spot: bool) -> int:
        units = self.units[gpu]
        held = units.on_demand + units.spot if spot else units.on_demand
        return max(0, units.total - held)

    def place(self, gpu_types: list[str], count: int, *, spot: bool) -> str:
        """The first type in the list with ``count`` units free (no list: any type), which are then held."""
        for gpu in gpu_types or list(self.units):
            if self.free(gpu, spot=spot) >= count:
                if spot:
                    self.units[gpu].spot += count
                else:
                    self.units[gpu].on_demand += count
                return gpu
        raise NoRunner(NO_RUNNER_MESSAGE)

    def release(self, gpu: str | None, count: int, *, spot: bool) -> None:
        if gpu is None or not count:
            return
        units = self.units[gpu]
        if spot:
            units.spot = max(0, units.spot - count)
        else:
            units.on_demand = max(0, units.on_demand - count)

    def capacity(self) -> GpuCapacityResponse:
        now = time.monotonic()
        if self._answer is not None and now - self._answer[0] < self.answer_seconds:
            return self._answer[1]
        answer = GpuCapacityResponse(
            observed_at=datetime.now(UTC),
            capacity=[
                GpuCapacity(
                    gpu_type=GpuType(gpu),
                    available_on_demand=self.free(gpu, spot=False),
                    available_spot=self.free(gpu, spot=True),
                )
                for gpu in self.units
            ],
        )
        self._answer = (now, answer)
        return answer


def count_sentences(gpu: Any) -> list[str]:
    """The validator's sentences for ``gpu`` (empty: valid)."""
    if gpu is None:
        return []
    if not isinstance(gpu, int) or isinstance(gpu, bool):
        return ["gpu must be a number conforming to the specified constraints"]
    if gpu < 0:
        return ["gpu must not be less than 0"]
    if gpu > MAX_GPUS:
        return [f"gpu must not be greater than {MAX_GPUS}"]
    return []


def current_api_key(organization_id: str) -> ApiKeyList:
    """``GET /api-keys/current``: the key the request came with, masked, and its organization."""
    now = datetime.now(UTC)
    return ApiKeyList(
        name="standin",
        value="dtn_****",
        created_at=now,
        permissions=["write:sandboxes", "delete:sandboxes"],
        last_used_at=now,
        expires_at=None,
        user_id="standin-user",
        organization_id=organization_id,
    )


def image_of(dockerfile: str | None) -> str | None:
    """The image a sandbox was built from (the ``FROM`` of the Dockerfile the SDK sends for an image)."""
    found = _FROM.search(dockerfile or "")
    return found.group(1) if found else None


def machine_env(gpu_type: str | None, gpu: int, image: str | None) -> dict[str, str]:
    """What a sandbox's processes learn of their machine."""
    if not gpu or gpu_type is None:
        return {}
    return {
        "DAYTONA_STANDIN_GPU_TYPE": gpu_type,
        "DAYTONA_STANDIN_GPU_COUNT": str(gpu),
        **({"DAYTONA_STANDIN_IMAGE": image} if image else {}),
    }
