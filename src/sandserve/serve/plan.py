"""`up --dry-run` (and the confirmation before a paid GPU): what would be created and run, with every secret
masked and where each setting came from. Creates nothing, needs no key."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sandserve.engines import engine_class
from sandserve.providers import get_provider
from sandserve.spec import SANDBOX_PORT, ServeSpec


def plan(spec: ServeSpec) -> dict[str, Any]:
    provider = get_provider(spec.provider)
    engine = engine_class(spec.engine).planned(spec)
    details = engine.plan_details(spec)
    port: int | str = spec.port or (SANDBOX_PORT if provider.remote else "a free port")
    launch = engine.launch(
        replace(spec, model=details["model"]),
        host=provider.bind_host,
        port=port if isinstance(port, int) else 0,
        api_key=spec.api_key,
    )
    head = {
        "provider": provider.name,
        "engine": spec.engine,
        "model": details.pop("model"),
        "served_name": spec.served_name,
        **details,
    }
    server = {"port": port, "command": launch.display_command(), "env": launch.display_env()}
    return provider.plan(spec, head, server)
