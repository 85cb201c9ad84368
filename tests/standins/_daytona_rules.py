"""What the Daytona API refuses, for the stand-in: bodies read with the SDK's own generated models, then the
rules of the service's DTOs and services (daytonaio/daytona, apps/api/src/sandbox/dto/create-sandbox.dto.ts
and the usage service).

- class-validator failures are 400s whose ``message`` is a LIST of sentences, as NestJS's ValidationPipe makes
  them (``"gpu must not be greater than 8"``, ``"each value in gpuType must be one of the following values:
  ..."``); service checks are 400s with one sentence (``"GPU sandboxes must be ephemeral - set
  autoDeleteInterval to 0"``).
- Unknown fields: the real API's ValidationPipe runs without ``forbidNonWhitelisted``, so it IGNORES them
  silently. The stand-in refuses them instead ("property X should not exist", the sentence NestJS uses when
  it does refuse): a field the service drops without a word is a bug in the caller, and a test must see it.
- An enum value the SDK does not know arrives as ``unknown_default_open_api`` (the generated enums'
  ``_missing_``): checked against the raw JSON, so it cannot slip through.
"""

from __future__ import annotations

from typing import Any

from daytona_api_client import GpuType
from pydantic import BaseModel

from ._daytona_gpus import count_sentences

#: The values the service accepts for gpuType (the enum's values, less the generator's fallback).
GPU_TYPE_VALUES = [gpu.value for gpu in GpuType if gpu is not GpuType.UNKNOWN_DEFAULT_OPEN_API]


class ValidationFailed(Exception):
    """A 400 with NestJS's list of sentences."""

    def __init__(self, sentences: list[str]) -> None:
        super().__init__("; ".join(sentences))
        self.sentences = sentences


def parse(model: type[BaseModel], raw: Any) -> Any:
    """``model.from_dict(raw)``, refusing unknown fields (at any depth the model describes)."""
    if not isinstance(raw, dict):
        raise ValidationFailed(["request body must be a JSON object"])
    body = model.from_dict(raw)  # type: ignore[attr-defined]
    unknown = sorted(getattr(body, "additional_properties", {}) or {})
    if unknown:
        raise ValidationFailed([f"property {name} should not exist" for name in unknown])
    return body


def check_create_sandbox(raw: dict[str, Any]) -> None:
    """The CreateSandboxDto's validators, on the raw JSON."""
    sentences = []
    sentences += count_sentences(raw.get("gpu"))
    gpu_type = raw.get("gpuType")
    if gpu_type is not None:
        values = gpu_type if isinstance(gpu_type, list) else [gpu_type]
        if not values:
            sentences.append("gpuType must contain at least 1 elements")
        if any(value not in GPU_TYPE_VALUES for value in values):
            sentences.append(
                f"each value in gpuType must be one of the following values: {', '.join(GPU_TYPE_VALUES)}"
            )
    for name in ("cpu", "memory", "disk"):
        value = raw.get(name)
        if isinstance(value, int) and value < 0:
            sentences.append(f"{name} must not be less than 0")
    for name in ("autoStopInterval", "ttlMinutes"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            sentences.append(f"{name} must be a non-negative integer")
    if sentences:
        raise ValidationFailed(sentences)


def service_refusal(raw: dict[str, Any]) -> str | None:
    """What the sandbox service refuses once the body is valid (one sentence), or None."""
    gpu = raw.get("gpu") or 0
    if gpu > 0 and raw.get("autoDeleteInterval") != 0:
        return "GPU sandboxes must be ephemeral - set autoDeleteInterval to 0"
    if raw.get("spot") and gpu == 0:
        return "Spot is only supported for GPU sandboxes"
    if gpu > 0 and raw.get("linkedSandbox"):
        return "GPU sandboxes cannot be linked to another sandbox"
    return None
