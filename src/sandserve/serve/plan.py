"""`up --dry-run` (and the confirmation before a paid GPU): what would be created and run, with every secret
masked and where each setting came from. Creates nothing, needs no key."""

from __future__ import annotations

from typing import Any

from sandserve import config
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
        "spot": spec.spot,
        "target": spec.target,
        "ttl": ttl_text(spec.ttl_minutes),
        "ttl_minutes": spec.ttl_minutes,
        "auto_stop": auto_stop_text(spec.auto_stop_minutes),
        "auto_stop_minutes": spec.auto_stop_minutes,
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
        "settings_from": settings_sources(spec),
    }


def settings_sources(spec: ServeSpec) -> dict[str, str]:
    """Where each Daytona / Hugging Face setting comes from (environment, .env.local, .env, default, a
    flag)."""
    key = config.daytona_key()
    target = config.daytona_target()
    hf = config.hf_token()
    sources = {
        key.name if key.is_set else "DAYTONA_API_KEY": key.source
        if key.is_set
        else "unset (needed to create)",
        "DAYTONA_API_URL": config.daytona_api_url().source + " (never read from .env files)",
        "DAYTONA_TARGET": target.source if target.value == spec.target else "--target",
    }
    if spec.hf_token_secret:
        sources["HF_TOKEN"] = f"Daytona secret {spec.hf_token_secret!r} (--hf-token-secret)"
    elif spec.hf_token:
        sources["HF_TOKEN"] = hf.source if hf.value == spec.hf_token else "given"
    else:
        sources["HF_TOKEN"] = "unset (gated models cannot download)"
    return sources


def ttl_text(minutes: int) -> str:
    if not minutes:
        return "none (the sandbox runs until `sandserve down`)"
    hours = f" ({minutes / 60:g} h)" if minutes >= 60 else ""
    return f"{minutes} min{hours} after creation Daytona deletes the sandbox, whatever it is doing"


def auto_stop_text(minutes: int) -> str:
    if not minutes:
        return "off"
    return f"after {minutes} idle min (the sandbox is ephemeral: a stop deletes it)"
