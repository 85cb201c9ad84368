"""`up --dry-run`: what would be created and run, with every secret masked. Creates nothing, needs no key."""

from __future__ import annotations

from typing import Any

from sandserve.engines import get_engine
from sandserve.masking import MASK
from sandserve.spec import SANDBOX_PORT, AuthMode, ProviderName, ServeSpec


def plan(spec: ServeSpec) -> dict[str, Any]:
    if spec.provider is ProviderName.LOCAL:
        return _local_plan(spec)
    engine = get_engine(spec.engine)
    launch = engine.launch(spec, host="0.0.0.0", port=spec.port or SANDBOX_PORT, api_key=spec.api_key)
    sandbox_env = {"HF_TOKEN": MASK} if spec.hf_token and not spec.hf_token_secret else {}
    return {
        "provider": str(spec.provider),
        "engine": spec.engine,
        "model": spec.model,
        "served_name": spec.served_name,
        "image": spec.image,
        "gpu": list(spec.gpus),
        "target": spec.target,
        "auth": str(spec.auth),
        "public": spec.auth in (AuthMode.KEY, AuthMode.PUBLIC),
        "port": spec.port or SANDBOX_PORT,
        "command": launch.display_command(),
        "env": {**sandbox_env, **launch.display_env()},
        "secrets": {"HF_TOKEN": spec.hf_token_secret} if spec.hf_token_secret else {},
        "cache_volume": spec.cache_volume,
        "boot_timeout": spec.boot_timeout,
        "create_timeout": spec.create_timeout,
        "keep_on_failure": not spec.delete_on_failure,
    }


def _local_plan(spec: ServeSpec) -> dict[str, Any]:
    from sandserve.engines.llamacpp_build import llama_server_path
    from sandserve.engines.modelfetch import describe_local_model

    binary = llama_server_path()
    engine = get_engine(spec.engine, llama_server=str(binary) if binary else "llama-server")
    model = describe_local_model(spec.model)
    launch = engine.launch(
        spec.with_overrides(model=model), host="127.0.0.1", port=spec.port or 0, api_key=spec.api_key
    )
    return {
        "provider": "local",
        "engine": spec.engine,
        "model": model,
        "served_name": spec.served_name,
        "binary": str(binary) if binary else "llama-server (built from source on first use)",
        "port": spec.port or "a free port",
        "command": launch.display_command(),
        "env": launch.display_env(),
        "boot_timeout": spec.boot_timeout,
    }
