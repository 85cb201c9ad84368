"""`up --dry-run`: what would be created and run, with every secret masked. Creates nothing, needs no key."""

from __future__ import annotations

from typing import Any

from sandserve.engines import engine_class
from sandserve.masking import MASK
from sandserve.providers import get_provider
from sandserve.spec import SANDBOX_PORT, AuthMode, ServeSpec


def plan(spec: ServeSpec) -> dict[str, Any]:
    provider = get_provider(spec.provider)
    engine = engine_class(spec.engine).planned(spec)
    details = engine.plan_details(spec)
    port: int | str = spec.port or (SANDBOX_PORT if provider.remote else "a free port")
    launch = engine.launch(
        spec.with_overrides(model=details["model"]),
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
    if not provider.remote:
        return {
            **head,
            "port": port,
            "command": launch.display_command(),
            "env": launch.display_env(),
            "boot_timeout": spec.boot_timeout,
        }
    # A sandbox elsewhere: its image, hardware, exposure and secrets are part of the plan.
    sandbox_env = {"HF_TOKEN": MASK} if spec.hf_token and not spec.hf_token_secret else {}
    return {
        **head,
        "image": spec.image,
        "gpu": list(spec.gpus),
        "target": spec.target,
        "auth": str(spec.auth),
        "public": spec.auth in (AuthMode.KEY, AuthMode.PUBLIC),
        "port": port,
        "command": launch.display_command(),
        "env": {**sandbox_env, **launch.display_env()},
        "secrets": {"HF_TOKEN": spec.hf_token_secret} if spec.hf_token_secret else {},
        "cache_volume": spec.cache_volume,
        "boot_timeout": spec.boot_timeout,
        "create_timeout": spec.create_timeout,
        "keep_on_failure": not spec.delete_on_failure,
    }
