"""ServeSpec: what to serve and how (``serve.resolve.resolve_spec`` builds one from presets, environment and
flags: deciding needs the engines and providers, which sit above this vocabulary)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from sandserve import config
from sandserve.errors import UnknownGpuError
from sandserve.masking import MASK

#: The SGLang release the guide's image carries; the tests' SGLang stand-in checks its requests and answers
#: against this release's own protocol models (its wheel), so the two never drift apart.
SGLANG_VERSION = "0.5.12.post1"
DEFAULT_SGLANG_IMAGE = f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130"
#: The GPU types the Daytona API takes, spelt as it takes them (`daytona_api_client.GpuType` VALUES; the
#: member names use underscores, and `GpuType("RTX_PRO_6000")` silently becomes "unknown_default_open_api").
GPU_TYPES = ("H100", "H200", "B200", "B300", "RTX-PRO-6000", "RTX-4090", "RTX-5090", "MI355X")
DEFAULT_GPUS = ("H100", "RTX-PRO-6000")
DEFAULT_TARGET = config.DEFAULT_TARGET
#: A GPU sandbox is destroyed this long after its creation unless told otherwise (--ttl; 0 for none).
DEFAULT_GPU_TTL_MINUTES = 240
SANDBOX_PORT = 8000
#: The engine of a Hugging Face model with no preset (and of an endpoint from the environment, until its
#: server says otherwise).
DEFAULT_ENGINE = "sglang"


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
        """Whether it asks for a (paid) GPU: ``resolve_spec`` leaves ``gpus`` empty where there are none."""
        return bool(self.gpus)

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
