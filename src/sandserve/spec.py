"""ServeSpec: what to serve and how, resolved once from defaults, presets, environment and flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from sandserve import config
from sandserve.errors import ConfigError, ModelFileNotFoundError, UnknownGpuError
from sandserve.masking import MASK
from sandserve.presets import (
    DEFAULT_DAYTONA_PRESET,
    DEFAULT_LOCAL_PRESET,
    Preset,
    find_preset,
    unknown_preset_error,
)

DEFAULT_SGLANG_IMAGE = "lmsysorg/sglang:v0.5.12.post1-cu130"
#: The GPU types the Daytona API takes, spelt as it takes them (`daytona_api_client.GpuType` VALUES; the member
#: names use underscores, and `GpuType("RTX_PRO_6000")` silently becomes "unknown_default_open_api").
GPU_TYPES = ("H100", "H200", "B200", "B300", "RTX-PRO-6000", "RTX-4090", "RTX-5090", "MI355X")
DEFAULT_GPUS = ("H100", "RTX-PRO-6000")
DEFAULT_TARGET = config.DEFAULT_TARGET
#: A GPU sandbox is destroyed this long after its creation unless told otherwise (--ttl; 0 for none).
DEFAULT_GPU_TTL_MINUTES = 240
SANDBOX_PORT = 8000
#: A local model loads in seconds; a GPU boot downloads and loads weights and captures CUDA graphs (minutes).
LOCAL_BOOT_TIMEOUT = 120.0


class AuthMode(StrEnum):
    TOKEN = "token"
    """Private preview; clients send the x-daytona-preview-token header (the default)."""
    SIGNED = "signed"
    """A signed preview URL with the token baked in; expires on schedule."""
    KEY = "key"
    """Public preview; SGLang itself checks an API key sent as Bearer."""
    PUBLIC = "public"
    """Public preview, no key: anyone with the URL can use the model."""


class ProviderName(StrEnum):
    LOCAL = "local"
    DAYTONA = "daytona"


@dataclass(frozen=True)
class ServeSpec:
    model: str
    """Hugging Face id, local model file, or the tiny model's name."""
    served_name: str
    engine: str
    provider: ProviderName
    preset: str | None = None
    image: str = DEFAULT_SGLANG_IMAGE
    gpus: tuple[str, ...] = DEFAULT_GPUS
    target: str = DEFAULT_TARGET
    port: int | None = None
    """Port the server listens on: the sandbox port on Daytona, a local port (None: a free one) locally."""
    auth: AuthMode = AuthMode.TOKEN
    api_key: str | None = None
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    """Environment for the server process (non-secret)."""
    hf_token: str | None = None
    hf_token_secret: str | None = None
    """Name of a Daytona secret holding HF_TOKEN, used instead of passing the token itself."""
    boot_timeout: float = 900.0
    create_timeout: float = 600.0
    signed_url_ttl: int = 3600
    cache_volume: str | None = None
    delete_on_failure: bool = False
    context_length: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ttl_minutes: int = 0
    """Daytona destroys the sandbox this many minutes after creation, whatever its state (0: no limit)."""
    auto_stop_minutes: int = 0
    """Daytona stops the sandbox after this many idle minutes (0: never); an ephemeral one is then deleted."""
    spot: bool = False
    """A spot GPU: cheaper, and may be taken back without notice."""

    @property
    def uses_gpu(self) -> bool:
        return self.provider is ProviderName.DAYTONA and bool(self.gpus)

    def with_overrides(self, **changes: object) -> ServeSpec:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_record(self) -> dict[str, Any]:
        """The spec as the ledger keeps it: no secret is written (an API key is made anew for each endpoint,
        and HF_TOKEN comes back from the environment)."""
        data = dataclasses.asdict(self)
        data["api_key"] = None
        data["hf_token"] = MASK if self.hf_token else None
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> ServeSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {name: value for name, value in data.items() if name in known}
        fields.update(
            provider=ProviderName(data["provider"]),
            auth=AuthMode(data["auth"]),
            gpus=tuple(data["gpus"]),
            extra_args=tuple(data["extra_args"]),
            hf_token=config.hf_token().value if data.get("hf_token") else None,
        )
        return cls(**fields)


def default_provider() -> ProviderName:
    """Daytona when a key is configured as the SDK finds it (environment, .env.local or .env in the current
    directory, never a parent's), else local."""
    return ProviderName.DAYTONA if config.daytona_key().is_set else ProviderName.LOCAL


def normalise_gpus(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Users write H100, h100, RTX_PRO_6000 or RTX-PRO-6000; the API takes the dashed upper-case values.
    An unknown name is refused here, before anything is created."""
    known = {gpu.replace("-", "_"): gpu for gpu in GPU_TYPES}
    chosen = []
    for name in names:
        gpu = known.get(name.strip().upper().replace("-", "_"))
        if gpu is None:
            raise UnknownGpuError(name, GPU_TYPES)
        if gpu not in chosen:
            chosen.append(gpu)
    return tuple(chosen)


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
    if model is None:
        model = DEFAULT_DAYTONA_PRESET if provider is ProviderName.DAYTONA else DEFAULT_LOCAL_PRESET
    preset = _preset_for(model)
    if engine is None:
        engine = preset.engine if preset else ("llamacpp" if model.endswith(".gguf") else "sglang")
    if provider is ProviderName.LOCAL and engine != "llamacpp":
        raise ConfigError(
            f"{model!r} is served with {engine}, which needs a GPU sandbox.",
            hint="Use --provider daytona (with DAYTONA_API_KEY set), or locally give a .gguf file or the "
            f"'{DEFAULT_LOCAL_PRESET}' preset.",
        )

    model_id = preset.model if preset else model
    if engine == "llamacpp" and not (preset and preset.built_in):
        path = Path(model_id).expanduser()
        if not path.is_file():
            raise ModelFileNotFoundError(path)
        model_id = str(path.resolve())

    if provider is ProviderName.LOCAL:
        overrides.setdefault("boot_timeout", LOCAL_BOOT_TIMEOUT)
    asked_gpus = overrides.pop("gpus", None)
    gpus = normalise_gpus(DEFAULT_GPUS if asked_gpus is None else asked_gpus)  # type: ignore[arg-type]
    if provider is ProviderName.DAYTONA:
        overrides.setdefault("target", config.daytona_target().value)
        if overrides.get("ttl_minutes") is None:
            overrides["ttl_minutes"] = DEFAULT_GPU_TTL_MINUTES if gpus else 0
    for key in [key for key, value in overrides.items() if value is None]:
        del overrides[key]
    auth_mode = AuthMode(auth) if auth else AuthMode.TOKEN
    api_key = overrides.pop("api_key", None)
    if auth_mode is AuthMode.KEY and not api_key:
        import secrets  # here: `ls` and `env` read specs and never pay for hashlib

        api_key = "sk-" + secrets.token_urlsafe(24)

    env = dict(preset.env) if preset else {}
    extra_env: dict[str, str] = overrides.pop("env", None) or {}  # type: ignore[assignment]
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
