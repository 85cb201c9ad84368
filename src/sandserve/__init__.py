"""sandserve: serve LLMs on GPU sandboxes with SGLang (or locally with llama.cpp), and use them.

The whole public API is importable from here. Names are loaded on first use, so ``import sandserve`` (and
every CLI verb) pays only for what it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sandserve import endpoint_slot as _endpoint_slot
from sandserve.errors import *  # noqa: F403 - every error is part of the public API
from sandserve.errors import __all__ as _error_names

if TYPE_CHECKING:
    from sandserve.batch import run_batch, run_batch_sync, run_requests, run_requests_sync
    from sandserve.client.connect import connect
    from sandserve.endpoint import Endpoint, EndpointStatus
    from sandserve.fleet import Fleet, fleet_down, fleet_status, fleet_up
    from sandserve.observe.bench import BenchConfig, LoadPlan, run_bench_sync
    from sandserve.observe.loads import EndpointLoad, LoadProbe, read_loads
    from sandserve.observe.metrics import Slo
    from sandserve.observe.report import write_report
    from sandserve.results import CacheStats, Capabilities, GenerateResult, ServerInfo, TokenUsage
    from sandserve.serve.boot_events import BootEvents
    from sandserve.serve.lifecycle import up
    from sandserve.serve.resolve import resolve_spec
    from sandserve.serve.verbs import down
    from sandserve.spec import AuthMode, ServeSpec
    from sandserve.tools.declaration import Tool, tool
    from sandserve.tools.loop import ToolLoopResult, run_tool_loop

#: Public name -> the module that defines it.
_LOCATIONS = {
    "AuthMode": "sandserve.spec",
    "BenchConfig": "sandserve.observe.bench",
    "BootEvents": "sandserve.serve.boot_events",
    "CacheStats": "sandserve.results",
    "Capabilities": "sandserve.results",
    "Endpoint": "sandserve.endpoint",
    "EndpointStatus": "sandserve.endpoint",
    "EndpointLoad": "sandserve.observe.loads",
    "Fleet": "sandserve.fleet",
    "GenerateResult": "sandserve.results",
    "LoadPlan": "sandserve.observe.bench",
    "LoadProbe": "sandserve.observe.loads",
    "ServeSpec": "sandserve.spec",
    "ServerInfo": "sandserve.results",
    "TokenUsage": "sandserve.results",
    "Slo": "sandserve.observe.metrics",
    "Tool": "sandserve.tools.declaration",
    "ToolLoopResult": "sandserve.tools.loop",
    "connect": "sandserve.client.connect",
    "down": "sandserve.serve.verbs",
    "fleet_down": "sandserve.fleet",
    "fleet_status": "sandserve.fleet",
    "fleet_up": "sandserve.fleet",
    "read_loads": "sandserve.observe.loads",
    "resolve_spec": "sandserve.serve.resolve",
    "run_batch": "sandserve.batch",
    "run_batch_sync": "sandserve.batch",
    "run_bench_sync": "sandserve.observe.bench",
    "run_requests": "sandserve.batch",
    "run_requests_sync": "sandserve.batch",
    "run_tool_loop": "sandserve.tools.loop",
    "tool": "sandserve.tools.declaration",
    "up": "sandserve.serve.lifecycle",
    "write_report": "sandserve.observe.report",
}

__all__ = sorted([*_LOCATIONS, *_error_names])


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _EndpointServices:
    """The client, engine and ledger work an ``Endpoint`` hands on (``endpoint.EndpointServices``)."""

    def generate(self, endpoint: Endpoint, text: str, options: dict[str, Any]) -> GenerateResult:
        from sandserve.client.constrained import generate, pick_constraint

        constraint = pick_constraint(
            regex=options.pop("regex"), ebnf=options.pop("ebnf"), json_schema=options.pop("json_schema")
        )
        return generate(endpoint, text, constraint, **options)

    def cache_stats(self, response: Any) -> CacheStats:
        from sandserve.client.usage import cache_stats

        return cache_stats(response)

    def capabilities(self, endpoint: Endpoint) -> Capabilities:
        from sandserve.engines import capabilities_of

        return capabilities_of(endpoint.engine)

    def status(self, endpoint: Endpoint) -> EndpointStatus:
        from sandserve.serve import verbs

        return verbs.status(endpoint)

    def logs(self, endpoint: Endpoint) -> str:
        from sandserve.serve import verbs

        return verbs.logs(endpoint)

    def down(self, endpoint: Endpoint) -> None:
        from sandserve.serve import verbs

        verbs.down(endpoint)

    def colocated(self, endpoint: Endpoint, verb: str, options: dict[str, Any]) -> Any:
        from sandserve.serve import colocated

        if verb == "exec":
            return colocated.exec_argv(endpoint, options.pop("argv"), **options)
        return colocated.run_script(endpoint, options.pop("script"), **options)

    def environment_headers(self) -> tuple[str, dict[str, str]]:
        # ENDPOINT/TOKEN are the guide's: a Daytona preview URL and its token.
        from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER, PROBE_HEADERS

        return PREVIEW_TOKEN_HEADER, dict(PROBE_HEADERS)


# In a slot, not through sandserve.endpoint: importing the package does not load the endpoint module.
_endpoint_slot.services = _EndpointServices()
