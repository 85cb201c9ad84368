"""The spec's shape: a generic core, the resources, the provider's and the engine's settings; stored in that
shape, and a ledger row written flat by the version before is reshaped by its migration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from old_ledger import OLD_SCHEMA

from sandserve import ServeSpec, resolve_spec
from sandserve.serve.ledger import Registry
from sandserve.spec import EngineSettings, GpuVendor, ProviderName, ProviderSettings, Resources

#: ``ServeSpec.to_record()`` as the version before the typed spec wrote it: one flat bag of fields.
FLAT_SPEC = {
    "model": "openai/gpt-oss-120b",
    "served_name": "gpt-oss-120b",
    "engine": "sglang",
    "provider": "daytona",
    "preset": "gpt-oss-120b",
    "image": "lmsysorg/sglang:v0.5.12.post1-cu130",
    "gpus": ["H100", "RTX-PRO-6000"],
    "target": "us-east-1",
    "port": 8000,
    "auth": "token",
    "api_key": None,
    "reasoning_parser": "gpt-oss",
    "tool_call_parser": "gpt-oss",
    "extra_args": ["--mem-fraction-static", "0.93"],
    "env": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"},
    "hf_token": None,
    "hf_token_secret": "my-hf",
    "boot_timeout": 900.0,
    "create_timeout": 600.0,
    "signed_url_ttl": 3600,
    "cache_volume": "hf-weights",
    "delete_on_failure": False,
    "context_length": 65536,
    "labels": {"team": "a"},
    "ttl_minutes": 240,
    "auto_stop_minutes": 15,
    "spot": True,
}


def test_resolve_spec_fills_each_part():
    spec = resolve_spec("gpt-oss-120b", provider="daytona", gpus=["mi355x"], spot=True, ttl_minutes=30)
    assert spec.resources == Resources(gpu_types=("MI355X",), gpu_count=1, spot=True, image=None)
    assert spec.resources.vendors == (GpuVendor.AMD,)
    assert spec.provider_settings.ttl_minutes == 30 and spec.provider_settings.target == "us-east-1"
    assert spec.engine_settings.reasoning_parser == "gpt-oss"
    assert spec.engine_settings.env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def test_a_mixed_list_names_both_vendors_in_order():
    spec = resolve_spec(provider="daytona", gpus=["H100", "MI355X", "RTX-PRO-6000"])
    assert spec.resources.vendors == (GpuVendor.NVIDIA, GpuVendor.AMD)


def test_the_local_provider_keeps_no_gpu_and_no_provider_defaults():
    spec = resolve_spec("tiny", provider="local", gpus=["H100"])
    assert spec.resources.gpu_types == () and not spec.uses_gpu
    assert spec.provider_settings == ProviderSettings()


def test_the_stored_spec_has_the_parts_and_reads_back():
    spec = resolve_spec("qwen3-8b", provider="daytona", cache_volume="w", extra_args=("--x", "1"))
    record = json.loads(json.dumps(spec.to_record()))
    assert {"resources", "provider_settings", "engine_settings"} <= set(record)
    assert record["resources"]["gpu_types"] == ["H100", "RTX-PRO-6000"]
    assert ServeSpec.from_record(record) == spec


def test_a_flat_spec_from_the_version_before_is_reshaped(tmp_path: Path):
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(OLD_SCHEMA)
        db.execute(
            "INSERT INTO endpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "e1",
                "daytona",
                "sglang",
                "gpt-oss-120b",
                "down",
                json.dumps({"provider": "daytona", "sandbox_id": "sb-1"}),
                None,
                json.dumps(FLAT_SPEC),
                None,
                None,
                1000.0,
                1001.0,
            ),
        )
    stored = Registry(path).get("e1").spec
    assert "gpus" not in stored and "target" not in stored and "extra_args" not in stored
    spec = ServeSpec.from_record(stored)
    assert spec.provider is ProviderName.DAYTONA and spec.context_length == 65536
    assert spec.labels == {"team": "a"}
    # The one image the version before always chose is the engine's choice now: nothing was asked.
    assert spec.resources == Resources(gpu_types=("H100", "RTX-PRO-6000"), gpu_count=1, spot=True, image=None)
    assert spec.provider_settings == ProviderSettings(
        target="us-east-1",
        ttl_minutes=240,
        auto_stop_minutes=15,
        create_timeout=600.0,
        signed_url_ttl=3600,
        cache_volume="hf-weights",
        hf_token_secret="my-hf",
    )
    assert spec.engine_settings == EngineSettings(
        reasoning_parser="gpt-oss",
        tool_call_parser="gpt-oss",
        extra_args=("--mem-fraction-static", "0.93"),
        env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"},
    )


def test_cost_so_far_counts_every_gpu_of_a_sandbox():
    from sandserve.providers.handles import SandboxHandle
    from sandserve.serve.ledger import Record, State
    from sandserve.serve.spend import gpu_seconds

    def down_after_an_hour(spec: ServeSpec) -> Record:
        return Record(
            id="e",
            provider="daytona",
            engine="sglang",
            model="m",
            state=State.DOWN,
            sandbox=SandboxHandle("daytona", "sb"),
            endpoint=None,
            spec=spec.to_record(),
            log_path=None,
            error=None,
            created_at=1000.0,
            updated_at=4600.0,
        )

    assert gpu_seconds(down_after_an_hour(resolve_spec(provider="daytona"))) == 3600.0
    assert gpu_seconds(down_after_an_hour(resolve_spec(provider="daytona", gpu_count=4))) == 4 * 3600.0
    assert gpu_seconds(down_after_an_hour(resolve_spec(provider="daytona", gpus=()))) == 0.0
