"""Inference engines: how to launch a server and read its start-up log."""

from __future__ import annotations

from sandserve.engines.base import (
    Capabilities,
    Diagnosis,
    Engine,
    Launch,
    ReadinessProbe,
    diagnose,
    phases_in,
)
from sandserve.errors import ConfigError

ENGINE_NAMES = ("sglang", "llamacpp")


def get_engine(name: str, *, llama_server: str | None = None) -> Engine:
    """The engine called ``name``; ``llama_server`` is the binary path for llama.cpp."""
    if name == "sglang":
        from sandserve.engines.sglang import SGLANG

        return SGLANG
    if name == "llamacpp":
        from sandserve.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(binary=llama_server or "llama-server")
    raise ConfigError(f"Unknown engine {name!r}.", hint=f"Use one of: {', '.join(ENGINE_NAMES)}.")


def capabilities_of(name: str) -> Capabilities:
    return get_engine(name).capabilities


__all__ = [
    "ENGINE_NAMES",
    "Capabilities",
    "Diagnosis",
    "Engine",
    "Launch",
    "ReadinessProbe",
    "capabilities_of",
    "diagnose",
    "get_engine",
    "phases_in",
]
