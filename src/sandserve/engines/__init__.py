"""Inference engines: how to launch a server, read its start-up log, and shape its requests.

Each engine is an ``Engine`` subclass that registers itself under its ``name``; the built-in ones are
imported on first use, so a verb pays only for the engine it touches.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sandserve.engines.base import (
    Diagnosis,
    Engine,
    Launch,
    ReadinessProbe,
    diagnose,
    phases_in,
)
from sandserve.engines.load_formats import LoadFields
from sandserve.errors import ConfigError
from sandserve.results import Capabilities

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


def _in_order() -> list[type[Engine]]:
    """Every engine, the built-in ones first in their order (registration order depends on imports)."""
    engines = all_engines()
    return [
        *(engines[name] for name in ENGINE_NAMES),
        *(e for n, e in engines.items() if n not in ENGINE_NAMES),
    ]


def load_routes() -> tuple[str, ...]:
    """Every engine's load route (JSON), then their Prometheus routes: where a server says what it does."""
    json_routes = [engine.load_route for engine in _in_order() if engine.load_route]
    metrics = [engine.metrics_route for engine in _in_order() if engine.metrics_route]
    return tuple(dict.fromkeys([*json_routes, *metrics]))


def metrics_routes() -> tuple[str, ...]:
    return tuple(dict.fromkeys(engine.metrics_route for engine in _in_order() if engine.metrics_route))


def load_parser(route: str) -> Callable[[Any], LoadFields] | None:
    """The reader of the engine whose JSON load route ``route`` is (None: a Prometheus route)."""
    return next((engine.load_fields for engine in _in_order() if engine.load_route == route), None)


def metric_names(field: str) -> tuple[str, ...]:
    """The metric carrying load ``field`` in each engine's dialect."""
    return tuple(engine.metric_names[field] for engine in _in_order() if field in engine.metric_names)


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
    "load_parser",
    "load_routes",
    "metric_names",
    "metrics_routes",
    "phases_in",
]
