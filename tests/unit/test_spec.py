"""What to serve, resolved from presets, explicit arguments and the environment; and what the ledger keeps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sandserve import AuthMode, ServeSpec, resolve_spec
from sandserve.errors import ConfigError, ModelFileNotFoundError, UnknownPresetError
from sandserve.masking import MASK
from sandserve.presets import PRESETS, find_preset
from sandserve.providers.local import LOCAL_BOOT_TIMEOUT
from sandserve.spec import ProviderName, default_provider


def test_without_a_key_the_local_default_is_smollm2():
    spec = resolve_spec()
    assert spec.provider is ProviderName.LOCAL and spec.engine == "llamacpp"
    assert spec.model == "smollm2-135m" and spec.preset == "smollm2-135m"
    assert spec.served_name == "smollm2-135m"
    assert spec.boot_timeout == LOCAL_BOOT_TIMEOUT


def test_with_a_key_daytona_and_gpt_oss_are_the_default(monkeypatch):
    monkeypatch.setenv("DAYTONA_API_KEY", "dtn_test")
    spec = resolve_spec()
    assert spec.provider is ProviderName.DAYTONA and spec.engine == "sglang"
    assert spec.model == "openai/gpt-oss-20b" and spec.engine_settings.reasoning_parser == "gpt-oss"
    assert spec.auth is AuthMode.TOKEN and spec.boot_timeout == 900.0


def test_default_provider_is_daytona_only_with_a_key(monkeypatch, tmp_path):
    assert default_provider() is ProviderName.LOCAL
    (tmp_path / ".env").write_text("DAYTONA_API_KEY=dtn_from_dotenv\n")
    monkeypatch.chdir(tmp_path)
    assert default_provider() is ProviderName.DAYTONA  # found in .env, as the SDK finds it


def test_a_preset_carries_its_flags_and_environment():
    spec = resolve_spec("gpt-oss-120b", provider="daytona", extra_args=("--tp", "2"))
    preset_flags = ("--mem-fraction-static", "0.93", "--cuda-graph-max-bs", "64")
    assert spec.engine_settings.extra_args == (*preset_flags, "--tp", "2")
    assert spec.engine_settings.env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def test_a_hugging_face_id_of_a_preset_finds_the_preset():
    spec = resolve_spec("Qwen/Qwen3-8B", provider="daytona")
    assert spec.preset == "qwen3-8b" and spec.engine_settings.tool_call_parser == "qwen"


def test_any_other_hugging_face_id_is_served_with_automatic_parsers():
    spec = resolve_spec("someorg/Some-Model:v2", provider="daytona")
    assert spec.preset is None and spec.engine == "sglang"
    assert spec.served_name == "Some-Model-v2"
    assert spec.engine_settings.reasoning_parser == "auto" and spec.engine_settings.tool_call_parser == "auto"


def test_none_switches_a_presets_parser_off_and_a_name_replaces_it():
    spec = resolve_spec("qwen3-8b", provider="daytona", reasoning_parser="none", tool_call_parser="hermes")
    assert spec.engine_settings.reasoning_parser is None and spec.engine_settings.tool_call_parser == "hermes"


def test_key_auth_makes_a_fresh_key_unless_one_is_given():
    first = resolve_spec("qwen3-8b", provider="daytona", auth="key")
    second = resolve_spec("qwen3-8b", provider="daytona", auth="key")
    assert first.api_key and first.api_key.startswith("sk-") and first.api_key != second.api_key
    given = resolve_spec("qwen3-8b", provider="daytona", auth="key", api_key="sk-mine")
    assert given.api_key == "sk-mine"


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(UnknownPresetError) as raised:
        resolve_spec("gpt-oss-21b")
    assert "gpt-oss-20b" in (raised.value.hint or "") and "sandserve presets" in (raised.value.hint or "")


def test_a_gpu_model_cannot_be_served_locally():
    with pytest.raises(ConfigError, match="needs a GPU sandbox"):
        resolve_spec("qwen3-8b", provider="local")


def test_a_local_model_file_must_exist(tmp_path: Path):
    with pytest.raises(ModelFileNotFoundError):
        resolve_spec(str(tmp_path / "missing.gguf"), provider="local")
    model = tmp_path / "mine.gguf"
    model.write_bytes(b"GGUF")
    spec = resolve_spec(str(model), provider="local")
    assert spec.model == str(model.resolve()) and spec.served_name == "mine" and spec.engine == "llamacpp"


def test_the_ledger_record_holds_no_secret_and_comes_back(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    spec = resolve_spec("llama-3.1-8b", provider="daytona", auth="key")
    record = spec.to_record()
    assert record["api_key"] is None and record["hf_token"] == MASK
    assert "hf_secret" not in str(record) and str(spec.api_key) not in str(record)
    back = ServeSpec.from_record(record)
    assert back.hf_token == "hf_secret"  # from the environment again
    assert replace(back, api_key=spec.api_key) == spec


def test_every_preset_is_found_by_name_and_by_model():
    for preset in PRESETS:
        assert find_preset(preset.name) is preset
        if "/" in preset.model:
            # A vendor's variant of a model (gpt-oss-120b-mi355x) leaves its id to the first preset.
            first = next(p for p in PRESETS if p.model == preset.model)
            assert find_preset(preset.model.upper()) is first
    assert find_preset("nope") is None


def test_the_preset_each_provider_serves_by_default_is_in_the_table() -> None:
    from sandserve.defaults import DEFAULT_DAYTONA_PRESET, DEFAULT_LOCAL_PRESET

    for name in (DEFAULT_DAYTONA_PRESET, DEFAULT_LOCAL_PRESET):
        preset = find_preset(name)
        assert preset is not None and preset.name == name
