"""What an endpoint has cost so far: the GPU hours its sandbox has held, times the user's price per GPU hour
(``SANDSERVE_GPU_HOUR_PRICE``; Daytona's rates vary by GPU and plan, so sandserve never guesses one)."""

from __future__ import annotations

import time

from sandserve.providers import get_provider
from sandserve.serve.ledger import Record, State


def gpu_seconds(record: Record) -> float:
    """GPU seconds the record has held: from creation to now (still up) or to its last change (down), times
    its GPUs."""
    resources = record.spec.get("resources") or {}
    if not get_provider(record.provider).offers_gpus or not resources.get("gpu_types"):
        return 0.0
    end = record.updated_at if record.state is State.DOWN else time.time()
    return max(0.0, end - record.created_at) * int(resources.get("gpu_count") or 1)


def cost_so_far(record: Record, price_per_gpu_hour: float) -> float | None:
    """None for an endpoint that holds no GPU (local, a CPU sandbox)."""
    seconds = gpu_seconds(record)
    return seconds / 3600 * price_per_gpu_hour if seconds else None
