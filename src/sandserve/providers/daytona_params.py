"""What a GPU sandbox is asked for: the SDK's create parameters, built from a spec.

GPU types go by the API's VALUES (`GpuType("RTX-PRO-6000")`): the SDK maps any other string to
``unknown_default_open_api`` without a word, so an unknown one is refused here instead.
"""

from __future__ import annotations

from typing import Any

from sandserve.errors import UnknownGpuError
from sandserve.spec import GPU_TYPES, AuthMode, ServeSpec, normalise_gpus


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

    env_vars: dict[str, str] = {}
    secrets = None
    if spec.hf_token_secret:
        secrets = {"HF_TOKEN": spec.hf_token_secret}
    elif spec.hf_token:
        env_vars["HF_TOKEN"] = spec.hf_token
    volumes = [VolumeMount(volume_id=cache_volume_id, mount_path=cache_path)] if cache_volume_id else None
    common: dict[str, Any] = dict(
        auto_stop_interval=spec.auto_stop_minutes,
        ttl_minutes=spec.ttl_minutes,
        spot=spec.spot if spec.gpus else None,
        ephemeral=True,
        public=spec.auth in (AuthMode.KEY, AuthMode.PUBLIC),
        env_vars=env_vars,
        secrets=secrets,
        volumes=volumes,
        target=spec.target,
        labels={**labels, **spec.labels},
    )
    if snapshot is not None:
        return CreateSandboxFromSnapshotParams(snapshot=snapshot, **common)
    resources = Resources(gpu=1, gpu_type=gpu_types(spec.gpus)) if spec.gpus else None
    return CreateSandboxFromImageParams(image=spec.image, resources=resources, **common)
