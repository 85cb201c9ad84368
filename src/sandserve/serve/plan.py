"""`up --dry-run` (and the confirmation before a paid GPU): what would be created and run, with every secret
masked and where each setting came from. Creates nothing, needs no key."""

from __future__ import annotations

from typing import Any

from sandserve import config
from sandserve.engines import engine_class
from sandserve.errors import SandserveError
from sandserve.masking import MASK
from sandserve.providers import get_provider
from sandserve.providers.base import Provider
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
        **({"boot": boot} if (boot := warm_boot_line(provider, spec)) else {}),
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


def warm_boot_line(provider: Provider[Any], spec: ServeSpec) -> str | None:
    """Whether the boot would be warm (from the spec's golden snapshot) or cold, and why. Asks the provider
    without changing anything (an inactive snapshot is only reported); None where there are no snapshots."""
    if not provider.keeps_snapshots or not spec.gpus:
        return None
    if not spec.warm_boot:
        return "cold: --no-snapshot (and none is captured at `down`)"
    if not config.daytona_key().is_set:
        return "unknown: no DAYTONA_API_KEY to look for this spec's golden snapshot with"
    try:
        warm = provider.warm_boot_plan(spec, activate=False)
    except SandserveError as exc:
        return f"unknown: {exc.message}"
    return warm.line() if warm else None


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
