"""GPU placement before anything is created: the image per vendor, --gpus, the fit check's arithmetic
(SGLang's own memory split), a model read from the Hub, and the dry-run plan."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from standins.hf_hub import HubStandin

from sandserve import resolve_spec
from sandserve.engines.sglang import SGLANG
from sandserve.engines.sglang_memory import static_fraction
from sandserve.errors import ConfigError, ModelDoesNotFitError
from sandserve.presets import GB, find_preset
from sandserve.serve import fit
from sandserve.serve.footprint import footprint_of
from sandserve.serve.plan import plan
from sandserve.spec import GPU_MEMORY_MIB, GpuVendor

GIB = 2**30


def _argv(spec) -> list[str]:
    return SGLANG.launch(spec, host="0.0.0.0", port=8000, api_key=None).argv


# --- SGLang's memory split, as its server_args.py computes it -----------------------------------------------


def test_the_static_fraction_is_sglangs_own_arithmetic():
    # H100 (81,559 MiB), TP 1: chunk 8192, graph bs 256; 512 + 8192*1.5 + 256*2 + 1/8*1024 + 58 capture
    # sizes * 8 = 13,872 MiB reserved (over the 10 GiB floor).
    assert static_fraction(81_559, 1, ()) == round((81_559 - 13_872) / 81_559, 3)
    # An RTX-4090 (under 35 GiB): chunk 2048, graph bs 24; the 2,048 chunk has 42 capture sizes.
    assert static_fraction(24_564, 1, ()) == round((24_564 - (512 + 3072 + 48 + 128 + 42 * 8)) / 24_564, 3)
    assert static_fraction(81_559, 1, ("--mem-fraction-static", "0.93")) == 0.93
    assert static_fraction(81_559, 1, ("--cuda-graph-max-bs=64",)) > static_fraction(81_559, 1, ())


def test_gpt_oss_20b_on_an_h100_gets_the_guides_kv_pool():
    spec = resolve_spec("gpt-oss-20b", provider="daytona", gpus=["H100"])
    footprint, _ = footprint_of(spec)
    assert footprint is not None
    found = fit.check(spec, footprint, "preset")
    assert found is not None
    (h100,) = found.fits
    assert h100.fits and 1_100_000 < (h100.kv_pool_tokens or 0) < 1_400_000  # the guide quotes about 1.2 M


# --- the fit check ------------------------------------------------------------------------------------------


def test_gpt_oss_120b_on_an_rtx_4090_is_refused_with_the_arithmetic_and_what_would_fit():
    spec = resolve_spec("gpt-oss-120b", provider="daytona", gpus=["RTX-4090"])
    with pytest.raises(ModelDoesNotFitError) as refused:
        plan(spec)
    message, hint = refused.value.message, refused.value.hint or ""
    assert "1 x RTX-4090: 67.7 GiB weights + " in message and "does not fit" in message
    assert "= 69.7 GiB > 22.3 GiB per GPU" in message  # 24,564 MiB x the preset's 0.93
    assert "--gpu H100 --gpus 1" in hint


def test_gpt_oss_120b_needs_its_memory_settings_on_an_h100():
    # Without the preset's --mem-fraction-static 0.93 SGLang's automatic share leaves no room for a KV pool.
    tuned = resolve_spec("gpt-oss-120b", provider="daytona", gpus=["H100"])
    bare = replace(tuned, engine_settings=replace(tuned.engine_settings, extra_args=()))
    found = fit.check(bare, find_preset("gpt-oss-120b").footprint, "preset")  # type: ignore[union-attr]
    assert found is not None and found.fitting == ()
    found = fit.check(tuned, find_preset("gpt-oss-120b").footprint, "preset")  # type: ignore[union-attr]
    assert found is not None and found.fitting == ("H100",)


def test_a_type_that_cannot_hold_the_model_is_dropped_from_the_list_and_said():
    spec = resolve_spec("qwen3-30b-a3b", provider="daytona", gpus=["RTX-4090", "H100"])
    shown = plan(spec)
    assert shown["gpu"] == ["H100"]
    assert any(note.startswith("skipping 1 x RTX-4090:") for note in shown["skipped"])


def test_two_gpus_split_the_weights_and_the_kv_cache():
    one = resolve_spec("qwen3-30b-a3b", provider="daytona", gpus=["H100"])
    two = resolve_spec("qwen3-30b-a3b", provider="daytona", gpus=["H100"], gpu_count=2)
    footprint = find_preset("qwen3-30b-a3b").footprint  # type: ignore[union-attr]
    single = fit.check(one, footprint, "preset").fits[0]  # type: ignore[union-attr]
    split = fit.check(two, footprint, "preset").fits[0]  # type: ignore[union-attr]
    assert split.weights == single.weights // 2 and split.kv_needed == single.kv_needed // 2


def test_the_70b_preset_does_not_fit_two_h100s_and_is_told_what_does():
    with pytest.raises(ModelDoesNotFitError) as refused:
        plan(resolve_spec("llama-3.3-70b", provider="daytona", gpus=["H100"]))
    assert "2 x H100:" in refused.value.message
    # One B200 (179 GiB) is less memory in all than two RTX PRO 6000 (2 x 95.6 GiB), and holds it.
    assert "--gpu B200 --gpus 1" in (refused.value.hint or "")


def test_the_presets_for_large_models_fit_what_they_ask_for():
    for name, count in (("llama-3.3-70b", 2), ("qwen3-235b-a22b-fp8", 4), ("gpt-oss-120b-mi355x", 1)):
        spec = resolve_spec(name, provider="daytona")
        assert spec.resources.gpu_count == count
        shown = plan(spec)
        assert set(shown["gpu"]) == set(spec.resources.gpu_types), (name, shown.get("skipped"))


def test_a_hugging_face_model_is_sized_from_the_hub_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("SANDSERVE_CACHE_DIR", str(tmp_path))
    config = {
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "hidden_size": 4096,
    }
    model = {"files": {"model-1.safetensors": 9 * GB, "model-2.safetensors": 7 * GB, "x.bin": 99 * GB}}
    with HubStandin(
        models={"someorg/Eight-B": {**model, "config": {**config, "max_position_embeddings": 8192}}}
    ) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        spec = resolve_spec("someorg/Eight-B", provider="daytona")
        footprint, source = footprint_of(spec)
        assert source == "the Hugging Face API"
        assert footprint is not None and footprint.weights_bytes == 16 * GB  # safetensors only, not the .bin
        assert footprint.kv_bytes_per_token == 32 * 8 * 128 * 2 * 2 and footprint.context_tokens == 8192
        asked = len(hub.requests)
        assert footprint_of(spec) == (footprint, "the Hugging Face API (cached)")
        assert len(hub.requests) == asked


def test_a_model_the_hub_cannot_size_is_not_refused_but_the_plan_says_so():
    shown = plan(resolve_spec("someorg/Unknown", provider="daytona"))  # HF_ENDPOINT: a closed port
    assert shown["fit"].startswith("not checked: could not read its size from Hugging Face")


# --- the image and the launch -------------------------------------------------------------------------------


def test_the_image_follows_the_gpu_vendor():
    assert SGLANG.sandbox_image(GpuVendor.NVIDIA) == "lmsysorg/sglang:v0.5.12.post1-cu130"
    assert SGLANG.sandbox_image(GpuVendor.AMD) == "lmsysorg/sglang:v0.5.12.post1-rocm720-mi35x"
    assert plan(resolve_spec(provider="daytona", gpus=["MI355X"]))["image"].endswith("-rocm720-mi35x")
    given = resolve_spec(provider="daytona", gpus=["MI355X"], image="me/mine:1")
    assert plan(given)["image"] == "me/mine:1"


def test_gpus_n_is_n_gpus_and_tensor_parallel_n():
    spec = resolve_spec(provider="daytona", gpu_count=2)
    argv = _argv(spec)
    assert argv[argv.index("--tp-size") + 1] == "2"
    assert plan(spec)["gpu_count"] == 2
    assert "--tp-size" not in _argv(resolve_spec(provider="daytona"))
    own = _argv(resolve_spec(provider="daytona", gpu_count=2, extra_args=("--tp", "2")))
    assert "--tp-size" not in own  # the user's own flag wins
    with pytest.raises(ConfigError, match="1 to 8 GPUs"):
        resolve_spec(provider="daytona", gpu_count=9)
    with pytest.raises(ConfigError, match="runs its server on no GPU"):
        resolve_spec("tiny", provider="local", gpu_count=2)


def test_a_mixed_list_is_one_create_per_vendor_in_order():
    spec = resolve_spec(provider="daytona", gpus=["H100", "MI355X", "RTX-PRO-6000"])
    assert spec.resources.by_vendor() == [
        (GpuVendor.NVIDIA, ("H100", "RTX-PRO-6000")),
        (GpuVendor.AMD, ("MI355X",)),
    ]
    creates = plan(spec)["creates"]
    assert creates == {
        "1 nvidia": "1 x H100 or RTX-PRO-6000 from lmsysorg/sglang:v0.5.12.post1-cu130",
        "2 amd": "1 x MI355X from lmsysorg/sglang:v0.5.12.post1-rocm720-mi35x",
    }


def test_every_gpu_type_has_its_memory():
    assert set(GPU_MEMORY_MIB) == set(
        resolve_spec(provider="daytona", gpus=list(GPU_MEMORY_MIB)).resources.gpu_types
    )


def test_presets_state_the_gpus_and_memory_they_need():
    from click.testing import CliRunner

    from sandserve.cli import main

    listed = CliRunner().invoke(main, ["presets", "--json"], catch_exceptions=False)
    by_name = {preset["name"]: preset for preset in json.loads(listed.output)}
    assert by_name["qwen3-235b-a22b-fp8"]["gpu_count"] == 4
    assert by_name["llama-3.3-70b"]["footprint"]["weights_bytes"] == 141_107_000_000
    assert by_name["gpt-oss-120b-mi355x"]["gpus"] == ["MI355X"]
