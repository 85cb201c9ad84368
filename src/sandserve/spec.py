"""ServeSpec: what to serve and how (``serve.resolve.resolve_spec`` builds one from presets, environment and
flags: deciding needs the engines and providers, which sit above this vocabulary)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from sandserve import config
from sandserve.errors import UnknownGpuError
from sandserve.masking import MASK
from sandserve.presets import DEFAULT_ENGINE as DEFAULT_ENGINE

#: The GPU types the Daytona API takes, spelt as it takes them (`daytona_api_client.GpuType` VALUES; the
#: member names use underscores, and `GpuType("RTX_PRO_6000")` silently becomes "unknown_default_open_api").
GPU_TYPES = ("H100", "H200", "B200", "B300", "RTX-PRO-6000", "RTX-4090", "RTX-5090", "MI355X")
DEFAULT_GPUS = ("H100", "RTX-PRO-6000")


class GpuVendor(StrEnum):
    NVIDIA = "nvidia"
    AMD = "amd"


#: Who makes each GPU type: the image follows the vendor (CUDA or ROCm builds of the engine).
GPU_VENDORS: dict[str, GpuVendor] = {
    gpu: GpuVendor.AMD if gpu.startswith("MI") else GpuVendor.NVIDIA for gpu in GPU_TYPES
}
#: Memory per GPU as the driver reports it to the engine (MiB: nvidia-smi / rocm-smi totals of each model's
#: common board; the fit check works from these).
GPU_MEMORY_MIB: dict[str, int] = {
    "H100": 81_559,
    "H200": 143_771,
    "B200": 183_359,
    "B300": 275_040,
    "RTX-PRO-6000": 97_887,
    "RTX-4090": 24_564,
    "RTX-5090": 32_607,
    "MI355X": 294_912,
}
#: The most GPUs one machine (so one sandbox) has.
MAX_GPUS_PER_SANDBOX = 8
DEFAULT_TARGET = config.DEFAULT_TARGET
#: A GPU sandbox is destroyed this long after its creation unless told otherwise (--ttl; 0 for none).
DEFAULT_GPU_TTL_MINUTES = 240
SANDBOX_PORT = 8000
#: Seconds ``up`` waits for a first generation unless the provider or the user says otherwise.
DEFAULT_BOOT_TIMEOUT = 900.0


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
class Resources:
    """What the server runs on: GPU types (a preference list), how many, spot or not, and the image (as
    skypilot's ``sky.Resources`` stands apart from the service spec). No GPU types: a CPU sandbox."""

    gpu_types: tuple[str, ...] = DEFAULT_GPUS
    """GPU types in order of preference, spelt as the API takes them (``normalise_gpus``)."""
    gpu_count: int = 1
    """GPUs per sandbox, all of one type; the engine spreads the model over them (SGLang ``--tp-size``)."""
    spot: bool = False
    """A spot GPU: cheaper, and may be taken back without notice."""
    image: str | None = None
    """The image to start from; None: the engine's own image for the GPU's vendor."""
    servers_on_machine: int = 1
    """Servers sharing the machine (a local fleet's workers): a CPU engine divides its cores between them."""

    @property
    def uses_gpu(self) -> bool:
        return bool(self.gpu_types)

    @property
    def vendors(self) -> tuple[GpuVendor, ...]:
        """The vendors of the GPU types, in the order first preferred."""
        return tuple(dict.fromkeys(GPU_VENDORS[gpu] for gpu in self.gpu_types))

    def by_vendor(self) -> list[tuple[GpuVendor, tuple[str, ...]]]:
        """The preference list cut into one run per vendor, in order: one image serves each run, so each is
        its own create (``H100, MI355X, RTX-PRO-6000``: NVIDIA ``H100, RTX-PRO-6000``, then AMD ``MI355X``).
        """
        return [
            (vendor, tuple(gpu for gpu in self.gpu_types if GPU_VENDORS[gpu] is vendor))
            for vendor in self.vendors
        ]


@dataclass(frozen=True)
class ProviderSettings:
    """What a sandbox provider takes besides the resources (the local provider needs none of it)."""

    target: str | None = None
    """The region the sandbox is created in (None: the provider's default)."""
    ttl_minutes: int | None = None
    """The sandbox is destroyed this many minutes after creation, whatever its state (0: no limit; None:
    the provider's default for the resources)."""
    auto_stop_minutes: int = 0
    """The sandbox stops after this many idle minutes (0: never); an ephemeral one is then deleted."""
    create_timeout: float = 600.0
    signed_url_ttl: int = 3600
    cache_volume: str | None = None
    """A volume kept between sandboxes for the Hugging Face cache (weights downloaded once)."""
    hf_token_secret: str | None = None
    """Name of a provider secret holding HF_TOKEN, used instead of passing the token itself."""
    warm_boot: bool = True
    """Boot from the spec's golden snapshot when there is one, and capture one at `down` after a cold boot
    (where the provider keeps snapshots); False: always boot from the image, and capture nothing."""


@dataclass(frozen=True)
class EngineSettings:
    """How the engine is told to serve: its parsers, extra flags and environment."""

    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    """Environment for the server process (non-secret)."""
    data_parallel: bool = False
    """Several GPUs each hold a whole copy of the model (SGLang ``--dp-size``), instead of one copy split
    across them (``--tp-size``, the default)."""


@dataclass(frozen=True)
class ServeSpec:
    """What to serve and how: a generic core, plus the resources, the provider's and the engine's settings."""

    model: str
    """Hugging Face id, local model file, or the tiny model's name."""
    served_name: str
    engine: str
    provider: ProviderName
    preset: str | None = None
    port: int | None = None
    """Port the server listens on: the sandbox port on Daytona, a local port (None: a free one) locally."""
    auth: AuthMode = AuthMode.TOKEN
    api_key: str | None = None
    hf_token: str | None = None
    context_length: int | None = None
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    delete_on_failure: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    provider_settings: ProviderSettings = field(default_factory=ProviderSettings)
    engine_settings: EngineSettings = field(default_factory=EngineSettings)

    @property
    def uses_gpu(self) -> bool:
        """Whether it asks for a (paid) GPU: ``resolve_spec`` leaves no GPU types where there are none."""
        return self.resources.uses_gpu

    def to_record(self) -> dict[str, Any]:
        """The spec as the ledger keeps it: no secret is written (an API key is made anew for each endpoint,
        and HF_TOKEN comes back from the environment)."""
        data = dataclasses.asdict(self)
        data["api_key"] = None
        data["hf_token"] = MASK if self.hf_token else None
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> ServeSpec:
        """A spec from ``to_record()``'s JSON (the ledger's ``m005_typed_spec`` reshaped older rows)."""
        resources = data.get("resources") or {}
        engine_settings = data.get("engine_settings") or {}
        return cls(
            model=data["model"],
            served_name=data["served_name"],
            engine=data["engine"],
            provider=ProviderName(data["provider"]),
            preset=data.get("preset"),
            port=data.get("port"),
            auth=AuthMode(data["auth"]),
            hf_token=config.hf_token().value if data.get("hf_token") else None,
            context_length=data.get("context_length"),
            boot_timeout=float(data.get("boot_timeout", DEFAULT_BOOT_TIMEOUT)),
            delete_on_failure=bool(data.get("delete_on_failure", False)),
            labels=dict(data.get("labels") or {}),
            resources=_known(Resources, resources, gpu_types=tuple(resources.get("gpu_types", ()))),
            provider_settings=_known(ProviderSettings, data.get("provider_settings") or {}),
            engine_settings=_known(
                EngineSettings,
                engine_settings,
                extra_args=tuple(engine_settings.get("extra_args", ())),
                env=dict(engine_settings.get("env") or {}),
            ),
        )


_Part = TypeVar("_Part", Resources, ProviderSettings, EngineSettings)


def _known(kind: type[_Part], data: dict[str, Any], **typed: Any) -> _Part:
    """One part of a stored spec: the fields this version knows (a newer one may have added some)."""
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{**{key: value for key, value in data.items() if key in names}, **typed})


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
