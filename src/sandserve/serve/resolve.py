"""``resolve_spec``: a ServeSpec from preset defaults < explicit arguments, decided by the engine and
provider.

The engine answers for its models (a ``.gguf`` file is llama.cpp's; it checks the file is there), the provider
for what it can run (the local one only engines that need no GPU) and its own defaults.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sandserve import config
from sandserve.engines import engine_class, engine_for_model
from sandserve.errors import NotAModelFileError
from sandserve.presets import Preset, find_preset, unknown_preset_error
from sandserve.providers import get_provider
from sandserve.spec import (
    DEFAULT_ENGINE,
    DEFAULT_GPUS,
    AuthMode,
    ProviderName,
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
    reasoning_parser: str | None = None,
    tool_call_parser: str | None = None,
    extra_args: tuple[str, ...] = (),
    **overrides: object,
) -> ServeSpec:
    """Build a ServeSpec: preset defaults < explicit arguments.

    ``model`` is a preset name, a path to a local .gguf file, or any Hugging Face id (org/name).
    """
    provider = ProviderName(provider) if provider else default_provider()
    where = get_provider(provider)
    if model is None:
        model = where.default_preset
    preset = _preset_for(model)
    # A file no engine can load is refused as a file, never taken for a Hugging Face id.
    if preset is None and Path(model).expanduser().is_file() and not engine_for_model(model, ""):
        raise NotAModelFileError(Path(model).expanduser())
    if engine is None:
        engine = preset.engine if preset else engine_for_model(model, DEFAULT_ENGINE)
    runs = engine_class(engine)
    where.check_engine(runs, model)
    model_id = runs.resolve_model(preset.model if preset else model, preset)

    if where.default_boot_timeout is not None:
        overrides.setdefault("boot_timeout", where.default_boot_timeout)
    asked_gpus = overrides.pop("gpus", None)
    gpus = normalise_gpus(DEFAULT_GPUS if asked_gpus is None else asked_gpus)  # type: ignore[arg-type]
    if not where.offers_gpus:
        gpus = ()  # checked all the same: a misspelt --gpu is an error wherever it is given
    where.fill_defaults(overrides, gpus)
    for key in [key for key, value in overrides.items() if value is None]:
        del overrides[key]
    auth_mode = AuthMode(auth) if auth else AuthMode.TOKEN
    api_key = overrides.pop("api_key", None)
    if auth_mode is AuthMode.KEY and not api_key:
        api_key = "sk-" + secrets.token_urlsafe(24)

    env = dict(preset.env) if preset else {}
    extra_env = overrides.pop("env", None)
    if isinstance(extra_env, dict):
        env.update(extra_env)
    hf_token = overrides.pop("hf_token", None) or config.hf_token().value or None

    return ServeSpec(
        model=model_id,
        served_name=served_name or (preset.served_name if preset else _served_name_for(model_id)),
        engine=engine,
        provider=provider,
        preset=preset.name if preset else None,
        auth=auth_mode,
        api_key=api_key,  # type: ignore[arg-type]
        reasoning_parser=_parser(reasoning_parser, preset.reasoning_parser if preset else "auto"),
        tool_call_parser=_parser(tool_call_parser, preset.tool_call_parser if preset else "auto"),
        extra_args=(*(preset.extra_args if preset else ()), *extra_args),
        env=env,
        hf_token=hf_token,  # type: ignore[arg-type]
        gpus=gpus,
        **overrides,  # type: ignore[arg-type]
    )


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
