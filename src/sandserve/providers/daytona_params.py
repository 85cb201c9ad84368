"""What a GPU sandbox is asked for: the SDK's create parameters, built from a spec.

GPU types go by the API's VALUES (`GpuType("RTX-PRO-6000")`): the SDK maps any other string to
``unknown_default_open_api`` without a word, so an unknown one is refused here instead.
"""

from __future__ import annotations

from typing import Any

from sandserve.engines import engine_class
from sandserve.errors import UnknownGpuError
from sandserve.spec import GPU_TYPES, AuthMode, GpuVendor, ServeSpec, normalise_gpus


def gpu_types(names: tuple[str, ...]) -> list[Any]:
    """The SDK's ``GpuType`` members for ``names`` (any spelling `normalise_gpus` takes)."""
    from daytona import GpuType

    chosen = []
    for name in normalise_gpus(names):
        gpu = GpuType(name)
        if gpu.value != name:  # the SDK's silent fallback for a value it does not know
            raise UnknownGpuError(name, GPU_TYPES)
        chosen.append(gpu)
    return chosen


def create_params(
    spec: ServeSpec,
    *,
    labels: dict[str, str],
    cache_volume_id: str | None,
    cache_path: str,
    snapshot: str | None = None,
) -> Any:
    """From the image with the spec's GPU preference list; or, with ``snapshot``, from that snapshot, which
    takes no resources of its own (the sandbox gets the snapshot's GPU count and type)."""
    from daytona import CreateSandboxFromImageParams, CreateSandboxFromSnapshotParams, Resources, VolumeMount

    settings, asked = spec.provider_settings, spec.resources
    env_vars: dict[str, str] = {}
    secrets = None
    if settings.hf_token_secret:
        secrets = {"HF_TOKEN": settings.hf_token_secret}
    elif spec.hf_token:
        env_vars["HF_TOKEN"] = spec.hf_token
    volumes = [VolumeMount(volume_id=cache_volume_id, mount_path=cache_path)] if cache_volume_id else None
    common: dict[str, Any] = dict(
        auto_stop_interval=settings.auto_stop_minutes,
        ttl_minutes=settings.ttl_minutes or 0,
        spot=asked.spot if asked.uses_gpu else None,
        ephemeral=True,
        public=spec.auth in (AuthMode.KEY, AuthMode.PUBLIC),
        env_vars=env_vars,
        secrets=secrets,
        volumes=volumes,
        target=settings.target,
        labels={**labels, **spec.labels},
    )
    if snapshot is not None:
        return CreateSandboxFromSnapshotParams(snapshot=snapshot, **common)
    resources = None
    if asked.uses_gpu:
        resources = Resources(gpu=asked.gpu_count, gpu_type=gpu_types(asked.gpu_types))
    return CreateSandboxFromImageParams(image=sandbox_image(spec), resources=resources, **common)


def sandbox_image(spec: ServeSpec) -> str:
    """The image asked for, else the engine's own for the vendor of the first GPU type."""
    if spec.resources.image:
        return spec.resources.image
    vendors = spec.resources.vendors
    return engine_class(spec.engine).sandbox_image(vendors[0] if vendors else GpuVendor.NVIDIA)
