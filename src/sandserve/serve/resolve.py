"""``resolve_spec``: a ServeSpec from preset defaults < explicit arguments, decided by the engine and
provider.

The engine answers for its models (a ``.gguf`` file is llama.cpp's; it checks the file is there), the provider
for what it can run (the local one only engines that need no GPU) and its own defaults.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from sandserve import config
from sandserve.engines import engine_class, engine_for_model
from sandserve.errors import ConfigError
from sandserve.presets import Preset, find_preset, not_a_model_file_error, unknown_preset_error
from sandserve.providers import get_provider
from sandserve.spec import (
    DEFAULT_BOOT_TIMEOUT,
    DEFAULT_ENGINE,
    DEFAULT_GPUS,
    MAX_GPUS_PER_SANDBOX,
    AuthMode,
    EngineSettings,
    ProviderName,
    ProviderSettings,
    Resources,
    ServeSpec,
    default_provider,
    normalise_gpus,
)


def resolve_spec(
    model: str | None = None,
    *,
    provider: ProviderName | str | None = None,
    engine: str | None = None,
    served_name: str | None = None,
    auth: AuthMode | str | None = None,
    api_key: str | None = None,
    port: int | None = None,
    context_length: int | None = None,
    boot_timeout: float | None = None,
    delete_on_failure: bool = False,
    labels: Mapping[str, str] | None = None,
    hf_token: str | None = None,
    gpus: Sequence[str] | None = None,
    gpu_count: int | None = None,
    spot: bool = False,
    image: str | None = None,
    reasoning_parser: str | None = None,
    tool_call_parser: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    target: str | None = None,
    ttl_minutes: int | None = None,
    auto_stop_minutes: int | None = None,
    create_timeout: float | None = None,
    signed_url_ttl: int | None = None,
    cache_volume: str | None = None,
    hf_token_secret: str | None = None,
    warm_boot: bool = True,
) -> ServeSpec:
    """Build a ServeSpec: preset defaults < explicit arguments (None: not said).

    ``model`` is a preset name, a path to a local .gguf file, or any Hugging Face id (org/name). ``gpus`` are
    GPU types in order of preference (any spelling ``normalise_gpus`` takes), ``gpu_count`` how many of one
    type each sandbox gets.
    """
    provider = ProviderName(provider) if provider else default_provider()
    where = get_provider(provider)
    if model is None:
        model = where.default_preset
    preset = _preset_for(model)
    # A file no engine can load is refused as a file, never taken for a Hugging Face id.
    if preset is None and Path(model).expanduser().is_file() and not engine_for_model(model, ""):
        raise not_a_model_file_error(Path(model).expanduser())
    if engine is None:
        engine = preset.engine if preset else engine_for_model(model, DEFAULT_ENGINE)
    runs = engine_class(engine)
    where.check_engine(runs, model)
    model_id = runs.resolve_model(preset.model if preset else model, preset)

    if gpus is None:
        gpus = preset.gpus if preset and preset.gpus else DEFAULT_GPUS
    gpu_types = normalise_gpus(tuple(gpus))
    if not where.offers_gpus:
        gpu_types = ()  # checked all the same: a misspelt --gpu is an error wherever it is given
    if gpu_count is not None and gpu_count > 1 and not where.offers_gpus:
        raise ConfigError(
            f"--gpus {gpu_count}: the {where.name} provider runs its server on no GPU.",
            hint="Leave --gpus out, or serve on Daytona (--provider daytona) to split a model over GPUs.",
        )
    if gpu_count is None:
        gpu_count = preset.gpu_count if preset else 1
    resources = Resources(gpu_types=gpu_types, gpu_count=_gpu_count(gpu_count), spot=spot, image=image)
    settings = ProviderSettings(
        target=target,
        ttl_minutes=ttl_minutes,
        auto_stop_minutes=auto_stop_minutes or 0,
        hf_token_secret=hf_token_secret,
        cache_volume=cache_volume,
        warm_boot=warm_boot,
    )
    if create_timeout is not None:
        settings = replace(settings, create_timeout=create_timeout)
    if signed_url_ttl is not None:
        settings = replace(settings, signed_url_ttl=signed_url_ttl)
    auth_mode = AuthMode(auth) if auth else AuthMode.TOKEN
    if auth_mode is AuthMode.KEY and not api_key:
        api_key = "sk-" + secrets.token_urlsafe(24)
    if boot_timeout is None:
        boot_timeout = where.default_boot_timeout or DEFAULT_BOOT_TIMEOUT

    return ServeSpec(
        model=model_id,
        served_name=served_name or (preset.served_name if preset else _served_name_for(model_id)),
        engine=engine,
        provider=provider,
        preset=preset.name if preset else None,
        port=port,
        auth=auth_mode,
        api_key=api_key,
        hf_token=hf_token or config.hf_token().value or None,
        context_length=context_length or (preset.context_length if preset else None),
        boot_timeout=boot_timeout,
        delete_on_failure=delete_on_failure,
        labels=dict(labels or {}),
        resources=resources,
        provider_settings=where.settle(settings, resources),
        engine_settings=EngineSettings(
            reasoning_parser=_parser(reasoning_parser, preset.reasoning_parser if preset else "auto"),
            tool_call_parser=_parser(tool_call_parser, preset.tool_call_parser if preset else "auto"),
            extra_args=(*(preset.extra_args if preset else ()), *extra_args),
            env={**(preset.env if preset else {}), **(env or {})},
            data_parallel=preset.data_parallel if preset else False,
        ),
    )


def _gpu_count(count: int) -> int:
    if not 1 <= count <= MAX_GPUS_PER_SANDBOX:
        raise ConfigError(
            f"--gpus {count}: a sandbox takes 1 to {MAX_GPUS_PER_SANDBOX} GPUs (all on one machine).",
            hint="Give --gpus 1, 2, 4 or 8; for more, serve several endpoints behind one gateway "
            "(`sandserve fleet up`).",
        )
    return count


def _preset_for(model: str) -> Preset | None:
    preset = find_preset(model)
    if preset:
        return preset
    if "/" in model or model.endswith(".gguf") or Path(model).expanduser().exists():
        return None
    raise unknown_preset_error(model)


def _served_name_for(model_id: str) -> str:
    name = Path(model_id).name if model_id.endswith(".gguf") else model_id.rsplit("/", 1)[-1]
    return name.removesuffix(".gguf").replace(":", "-")


def _parser(explicit: str | None, preset_value: str | None) -> str | None:
    """``none`` switches a preset's parser off; anything else replaces it."""
    if explicit is None:
        return preset_value
    return None if explicit == "none" else explicit
