"""What a dry run shows of a Daytona sandbox: its image, GPUs, time limits, exposure, secrets, and where each
setting came from. Creates nothing, needs no key."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sandserve import config
from sandserve.masking import MASK
from sandserve.providers.daytona_params import sandbox_image
from sandserve.spec import AuthMode, ServeSpec


def sandbox_plan(spec: ServeSpec, head: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    """The plan of a server in a Daytona sandbox: its image, hardware, exposure and secrets with ``head`` (the
    engine's lines) and ``server`` (its port, command and environment)."""
    env = {**sandbox_env(spec), **server.pop("env", {})}
    return {**head, **sandbox_details(spec), **server, "env": env, **plan_tail(spec)}


def sandbox_details(spec: ServeSpec) -> dict[str, Any]:
    settings, resources = spec.provider_settings, spec.resources
    ttl = settings.ttl_minutes or 0
    return {
        "image": sandbox_image(spec),
        "gpu": list(resources.gpu_types),
        "gpu_count": resources.gpu_count if resources.uses_gpu else 0,
        **({"creates": creates(spec)} if len(resources.vendors) > 1 else {}),
        "spot": resources.spot,
        "target": settings.target,
        "ttl": ttl_text(ttl),
        "ttl_minutes": ttl,
        "auto_stop": auto_stop_text(settings.auto_stop_minutes),
        "auto_stop_minutes": settings.auto_stop_minutes,
        "auth": str(spec.auth),
        "public": spec.auth in (AuthMode.KEY, AuthMode.PUBLIC),
    }


def creates(spec: ServeSpec) -> dict[str, str]:
    """One create per GPU vendor, in the order tried, each with its vendor's image."""
    count = spec.resources.gpu_count
    shown = {}
    for number, (vendor, gpus) in enumerate(spec.resources.by_vendor(), start=1):
        one = replace(spec, resources=replace(spec.resources, gpu_types=gpus))
        shown[f"{number} {vendor.value}"] = f"{count} x {' or '.join(gpus)} from {sandbox_image(one)}"
    return shown


def sandbox_env(spec: ServeSpec) -> dict[str, str]:
    """What the sandbox's environment gets besides the server's (masked)."""
    return {"HF_TOKEN": MASK} if spec.hf_token and not spec.provider_settings.hf_token_secret else {}


def plan_tail(spec: ServeSpec) -> dict[str, Any]:
    secret = spec.provider_settings.hf_token_secret
    return {
        "secrets": {"HF_TOKEN": secret} if secret else {},
        "cache_volume": spec.provider_settings.cache_volume,
        "boot_timeout": spec.boot_timeout,
        "create_timeout": spec.provider_settings.create_timeout,
        "keep_on_failure": not spec.delete_on_failure,
        "settings_from": settings_sources(spec),
    }


def settings_sources(spec: ServeSpec) -> dict[str, str]:
    """Where each Daytona / Hugging Face setting comes from (environment, .env.local, .env, default, a
    flag)."""
    key = config.daytona_key()
    target = config.daytona_target()
    hf = config.hf_token()
    secret = spec.provider_settings.hf_token_secret
    sources = {
        key.name if key.is_set else "DAYTONA_API_KEY": key.source
        if key.is_set
        else "unset (needed to create)",
        "DAYTONA_API_URL": config.daytona_api_url().source + " (never read from .env files)",
        "DAYTONA_TARGET": target.source if target.value == spec.provider_settings.target else "--target",
    }
    if secret:
        sources["HF_TOKEN"] = f"Daytona secret {secret!r} (--hf-token-secret)"
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
