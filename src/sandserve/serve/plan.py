"""`up --dry-run` (and the confirmation before a paid GPU): what would be created and run, with every secret
masked and where each setting came from. Creates nothing, needs no key."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sandserve.engines import engine_class
from sandserve.errors import SandserveError
from sandserve.providers import get_provider
from sandserve.providers.base import Provider
from sandserve.serve.placement import place
from sandserve.spec import SANDBOX_PORT, ServeSpec


def plan(spec: ServeSpec) -> dict[str, Any]:
    """What ``up`` would do with ``spec``; refused as ``up`` refuses it (a model that cannot fit, no GPU
    with capacity) before anything is shown."""
    provider = get_provider(spec.provider)
    placed = place(spec, provider)
    spec = placed.spec
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
    if spec.uses_gpu:
        head = {**head, **placed.shown()}
    shown = provider.plan(spec, head, server)
    boot = warm_boot_line(provider, spec)
    if not boot:
        return shown
    # Beside the image: whether the boot starts from it or from the spec's golden snapshot.
    before, after = list(shown.items()), list[tuple[str, Any]]()
    while before and before[-1][0] not in ("image", "served_name"):
        after.insert(0, before.pop())
    return {**dict(before), "boot": boot, **dict(after)}


def warm_boot_line(provider: Provider[Any], spec: ServeSpec) -> str | None:
    """Whether the boot would be warm (from the spec's golden snapshot) or cold, and why. Asks the provider
    without changing anything (an inactive snapshot is only reported); None where there are no snapshots."""
    if not provider.keeps_snapshots or not spec.uses_gpu:
        return None
    if not spec.provider_settings.warm_boot:
        return "cold: --no-snapshot (and none is captured at `down`)"
    try:
        warm = provider.warm_boot_plan(spec, activate=False)
    except SandserveError as exc:
        return f"unknown: {exc.message}"
    return warm.line() if warm else None
