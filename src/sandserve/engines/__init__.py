"""Inference engines: how to launch a server, read its start-up log, and shape its requests.

Each engine is an ``Engine`` subclass that registers itself under its ``name``; the built-in ones are
imported on first use, so a verb pays only for the engine it touches.
"""

from __future__ import annotations

import importlib

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

#: Where each built-in engine lives (imported by name: nothing is loaded before it is needed).
BUILTIN_ENGINES = {
    "sglang": "sandserve.engines.sglang",
    "llamacpp": "sandserve.engines.llamacpp",
}
ENGINE_NAMES = tuple(BUILTIN_ENGINES)


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``."""
    if name not in Engine.registered and name in BUILTIN_ENGINES:
        importlib.import_module(BUILTIN_ENGINES[name])
    try:
        return Engine.registered[name]
    except KeyError:
        raise ConfigError(
            f"Unknown engine {name!r}.", hint=f"Use one of: {', '.join(sorted(all_engines()))}."
        ) from None


def get_engine(name: str) -> Engine:
    """The engine called ``name``, for its dialect (its prepare step gives the one to launch)."""
    return engine_class(name)()


def all_engines() -> dict[str, type[Engine]]:
    """Every engine, the built-in ones loaded."""
    for module in BUILTIN_ENGINES.values():
        importlib.import_module(module)
    return dict(Engine.registered)


def engine_for_model(model: str, default: str) -> str:
    """The engine whose model form ``model`` has (a ``.gguf`` file: llama.cpp), else ``default``."""
    return next((name for name, cls in all_engines().items() if cls.claims_model(model)), default)


def engine_owning(owned_by: str) -> str | None:
    """The engine whose ``/v1/models`` says ``owned_by``, if any."""
    owner = owned_by.lower()
    return next((name for name, cls in all_engines().items() if cls.owned_by == owner), None)


def capabilities_of(name: str) -> Capabilities:
    return engine_class(name).capabilities


__all__ = [
    "BUILTIN_ENGINES",
    "ENGINE_NAMES",
    "Capabilities",
    "Diagnosis",
    "Engine",
    "Launch",
    "ReadinessProbe",
    "all_engines",
    "capabilities_of",
    "diagnose",
    "engine_class",
    "engine_for_model",
    "engine_owning",
    "get_engine",
    "phases_in",
]
