"""GPU placement against the Daytona stand-in and the real SDK: N GPUs and tensor parallel, the vendor's
image (and SGLang dying on the wrong one), the capacity answer skipping a type, one create per vendor, the
GPU quota, and models refused before anything is created."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from test_daytona_contract import daytona, last_create, sglang_spec  # noqa: F401 - the stand-in fixture

from sandserve.errors import EngineDiedError, GpuCapacityError, QuotaExceededError
from sandserve.providers.daytona import DaytonaProvider
from sandserve.serve import lifecycle
from sandserve.serve.lifecycle import BootEvents

ROCM_IMAGE = "lmsysorg/sglang:v0.5.12.post1-rocm720-mi35x"
CUDA_IMAGE = "lmsysorg/sglang:v0.5.12.post1-cu130"


class Said(BootEvents):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def status(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.lines.append(f"warning: {message}")


def image_of(body: dict) -> str:
    return body["buildInfo"]["dockerfileContent"].split()[1]


def test_an_mi355x_gets_the_rocm_image_and_serves(daytona):  # noqa: F811
    endpoint = lifecycle.up(sglang_spec(gpus=("MI355X",)))
    body = last_create(daytona)
    assert body["gpuType"] == ["MI355X"] and image_of(body) == ROCM_IMAGE
    assert daytona.sandboxes[endpoint.sandbox_id].gpu_type == "MI355X"
    assert endpoint.status().ready


def test_gpus_2_is_a_two_gpu_sandbox_and_tensor_parallel_2(daytona):  # noqa: F811
    endpoint = lifecycle.up(sglang_spec(gpu_count=2))
    assert last_create(daytona)["gpu"] == 2
    record = daytona.sandboxes[endpoint.sandbox_id]
    assert record.gpu == 2 and "--tp-size 2" in record.runs[-1].command
    assert daytona.gpus.free("H100", spot=False) == 6  # 8 units, 2 held


def test_more_ranks_than_gpus_dies_as_sglang_does_and_is_diagnosed(daytona):  # noqa: F811
    with pytest.raises(EngineDiedError) as died:
        lifecycle.up(sglang_spec(extra_args=("--tp-size", "2"), delete_on_failure=True))
    assert "more GPUs than the sandbox has" in str(died.value) and "--gpus N" in str(died.value)


def test_a_cuda_image_on_an_amd_gpu_dies_as_torch_does_and_is_diagnosed(daytona):  # noqa: F811
    with pytest.raises(EngineDiedError) as died:
        lifecycle.up(sglang_spec(gpus=("MI355X",), image=CUDA_IMAGE, delete_on_failure=True))
    assert "does not match the sandbox's GPU vendor" in str(died.value)
    assert "Leave --image out" in str(died.value)


def test_a_type_the_capacity_answer_has_none_of_is_skipped_before_create(daytona):  # noqa: F811
    daytona.gpus.set_total("H100", 0)
    said = Said()
    lifecycle.up(sglang_spec(), events=said)
    assert [body["gpuType"] for body in daytona.create_bodies] == [["RTX-PRO-6000"]]
    assert "skipping H100: 0 free on demand, 1 needed" in said.lines
    assert ("GET", "/api/organizations/standin-org/gpu-capacity") in daytona.requests


def test_no_type_with_capacity_is_refused_before_any_create(daytona):  # noqa: F811
    daytona.gpus.set_total("H100", 1)
    daytona.gpus.set_total("RTX-PRO-6000", 0)
    with pytest.raises(GpuCapacityError) as refused:
        lifecycle.up(sglang_spec(gpu_count=2))
    assert "No H100 or RTX-PRO-6000 has 2 GPUs free" in refused.value.message
    assert daytona.create_bodies == []


def test_a_mixed_list_is_one_create_per_vendor_and_moves_on_when_one_has_nothing(daytona):  # noqa: F811
    spec = sglang_spec(gpus=("H100", "MI355X"))
    # The capacity answer is a few seconds old ("may be cached for up to five seconds"): H100s free then,
    # gone by the create, which the scheduler refuses.
    daytona.gpus.answer_seconds = 60
    assert DaytonaProvider().gpu_capacity(spec)[0]["H100"] == 8  # type: ignore[index]
    daytona.gpus.set_total("H100", 0)
    said = Said()
    endpoint = lifecycle.up(spec, events=said)
    first, second = daytona.create_bodies
    assert (first["gpuType"], image_of(first)) == (["H100"], CUDA_IMAGE)
    assert (second["gpuType"], image_of(second)) == (["MI355X"], ROCM_IMAGE)
    moved_on = [line for line in said.lines if "Trying MI355X next" in line]
    assert moved_on and "No available runners" in moved_on[0]
    assert endpoint.status().ready
    assert daytona.sandboxes[endpoint.sandbox_id].gpu_type == "MI355X"


def test_the_gpu_quota_counts_every_gpu_of_a_sandbox(daytona):  # noqa: F811
    daytona.gpu_quota = 3
    lifecycle.up(sglang_spec(gpu_count=2))
    with pytest.raises(QuotaExceededError):
        lifecycle.up(sglang_spec(gpu_count=2))


def test_the_stand_in_takes_up_to_eight_gpus_and_refuses_more(daytona):  # noqa: F811
    import httpx

    headers = {"Authorization": f"Bearer {daytona.api_key}"}
    body = {"gpuType": ["H100"], "autoDeleteInterval": 0}
    refused = httpx.post(f"{daytona.url}/sandbox", json={**body, "gpu": 9}, headers=headers)
    assert refused.status_code == 400 and refused.json()["message"] == ["gpu must not be greater than 8"]
    taken = httpx.post(f"{daytona.url}/sandbox", json={**body, "gpu": 8}, headers=headers)
    assert taken.status_code == 200 and taken.json()["gpu"] == 8
    full = httpx.post(f"{daytona.url}/sandbox", json={**body, "gpu": 1}, headers=headers)
    assert full.status_code == 400 and full.json()["message"] == "No available runners"


def test_dry_runs_show_the_placement_and_refuse_what_cannot_fit(daytona):  # noqa: F811
    amd = run_cli("up", "--provider", "daytona", "--dry-run", "--json", "--gpu", "MI355X")
    assert amd.returncode == 0, amd.stderr
    shown = json.loads(amd.stdout)
    assert shown["image"] == ROCM_IMAGE and shown["capacity"] == {"MI355X": "8 free on demand"}
    two = json.loads(run_cli("up", "--provider", "daytona", "--dry-run", "--json", "--gpus", "2").stdout)
    assert two["gpu_count"] == 2 and "--tp-size 2" in two["command"]
    assert set(two["fit"]) == {"2 x H100", "2 x RTX-PRO-6000"}
    mixed = run_cli("up", "--provider", "daytona", "--dry-run", "--json", "--gpu", "h100", "--gpu", "mi355x")
    assert list(json.loads(mixed.stdout)["creates"]) == ["1 nvidia", "2 amd"]
    refused = run_cli("up", "--provider", "daytona", "--model", "gpt-oss-120b", "--gpu", "RTX-4090", "--yes")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "67.7 GiB weights" in refused.stderr and "--gpu H100 --gpus 1" in refused.stderr
    assert daytona.create_bodies == []  # nothing created, nothing paid for
