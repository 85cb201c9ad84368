"""GPU names, settings read as the Daytona SDK reads them, and the boot breaker's notion of "the same
spec"."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from daytona import GpuType

from sandserve import config
from sandserve.errors import ConfigError, UnknownGpuError
from sandserve.serve.breaker import fingerprint
from sandserve.serve.resolve import resolve_spec
from sandserve.spec import DEFAULT_GPUS, GPU_TYPES, ProviderName, normalise_gpus


def test_the_gpu_list_is_the_apis_own_values():
    assert set(GPU_TYPES) == {gpu.value for gpu in GpuType} - {"unknown_default_open_api"}
    assert DEFAULT_GPUS == ("H100", "RTX-PRO-6000")
    for name in DEFAULT_GPUS:
        assert GpuType(name).value == name  # no silent fallback to unknown_default_open_api


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        (["H100"], ("H100",)),
        (["h100"], ("H100",)),
        (["RTX_PRO_6000"], ("RTX-PRO-6000",)),
        (["rtx-pro-6000", "H100", "h100"], ("RTX-PRO-6000", "H100")),
        (["mi355x"], ("MI355X",)),
    ],
)
def test_gpu_names_are_accepted_in_the_spellings_users_write(written, sent):
    assert normalise_gpus(written) == sent


def test_an_unknown_gpu_is_refused_with_the_valid_list():
    with pytest.raises(UnknownGpuError) as caught:
        normalise_gpus(["H100", "A100"])
    assert "'A100'" in caught.value.message and "RTX-PRO-6000" in str(caught.value.hint)
    with pytest.raises(UnknownGpuError):
        resolve_spec(provider="daytona", gpus=("NOPE",))


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


def test_settings_come_from_env_then_env_local_then_env_in_this_folder(tmp_path, monkeypatch):
    _write(Path.cwd(), ".env", "DAYTONA_TARGET=from-env-file\nHF_TOKEN=hf_dotenv\n")
    assert config.daytona_target() == config.Setting("DAYTONA_TARGET", "from-env-file", ".env")
    _write(Path.cwd(), ".env.local", "DAYTONA_TARGET=from-env-local\n")
    assert config.daytona_target().source == ".env.local"
    monkeypatch.setenv("DAYTONA_TARGET", "eu")
    assert config.daytona_target() == config.Setting("DAYTONA_TARGET", "eu", "environment")
    assert config.hf_token().value == "hf_dotenv"


def test_a_parent_folders_env_file_is_not_read(tmp_path, monkeypatch):
    parent = Path.cwd()
    _write(parent, ".env", "DAYTONA_API_KEY=dtn_parent\nDAYTONA_TARGET=parent\n")
    child = parent / "child"
    child.mkdir()
    monkeypatch.chdir(child)
    assert not config.daytona_key().is_set
    assert config.daytona_target() == config.Setting("DAYTONA_TARGET", "us-east-1", "default")
    assert resolve_spec().provider is ProviderName.LOCAL  # `make demo` stays local


def test_the_api_url_never_comes_from_a_file():
    _write(Path.cwd(), ".env", "DAYTONA_API_URL=http://127.0.0.1:9/steal\nDAYTONA_API_KEY=dtn_x\n")
    _write(Path.cwd(), ".env.local", "DAYTONA_API_URL=http://127.0.0.1:9/steal\n")
    assert config.daytona_api_url() == config.Setting(
        "DAYTONA_API_URL", "https://app.daytona.io/api", "default"
    )
    assert config.daytona_key() == config.Setting("DAYTONA_API_KEY", "dtn_x", ".env")


def test_the_target_defaults_to_the_guides_region_only_when_unset(monkeypatch):
    assert resolve_spec(provider="daytona").provider_settings.target == "us-east-1"
    monkeypatch.setenv("DAYTONA_TARGET", "eu")
    assert resolve_spec(provider="daytona").provider_settings.target == "eu"
    assert resolve_spec(provider="daytona", target="us").provider_settings.target == "us"


def test_gpu_sandboxes_get_a_time_limit_by_default():
    assert resolve_spec(provider="daytona").provider_settings.ttl_minutes == 240
    assert resolve_spec(provider="daytona", ttl_minutes=0).provider_settings.ttl_minutes == 0
    assert resolve_spec(provider="daytona", gpus=()).provider_settings.ttl_minutes == 0  # a CPU sandbox


def test_the_breaker_sees_a_new_port_or_key_as_the_same_spec():
    spec = resolve_spec(provider="daytona", port=8001)
    again = resolve_spec(provider="daytona", port=8002, api_key="sk-other")
    other = resolve_spec(provider="daytona", port=8001, extra_args=("--mem-fraction-static", "0.8"))
    assert fingerprint(spec.to_record()) == fingerprint(again.to_record())
    assert fingerprint(spec.to_record()) != fingerprint(other.to_record())


def test_an_engine_that_serves_from_this_machine_is_refused_on_daytona():
    # llama.cpp declares that a sandbox image lacks it; the Daytona provider asks, before anything is made.
    from sandserve.engines import engine_class

    assert not engine_class("llamacpp").runs_in_sandbox_image and engine_class("sglang").runs_in_sandbox_image
    for model in ("tiny", "smollm2-135m", "/models/any.gguf"):
        with pytest.raises(ConfigError, match="runs on this machine only") as refused:
            resolve_spec(model, provider="daytona", gpus=())
        assert "--provider local" in (refused.value.hint or "")
    assert resolve_spec("tiny", provider="local").engine == "llamacpp"  # where it does run
    assert resolve_spec(provider="daytona", gpus=()).engine == "sglang"


def test_a_spec_made_without_resolve_spec_is_refused_too(monkeypatch):
    # lifecycle.up asks the provider before the engine prepares anything (a build, a download) or a sandbox
    # exists.
    from sandserve.engines.llamacpp import LlamaCppEngine
    from sandserve.serve import lifecycle

    def prepare(*args, **kwargs):
        raise AssertionError("prepared an engine the provider cannot run")

    monkeypatch.setattr(LlamaCppEngine, "prepare", prepare)
    spec = replace(resolve_spec("tiny", provider="local"), provider=ProviderName.DAYTONA)
    with pytest.raises(ConfigError, match="runs on this machine only"):
        lifecycle.up(spec)
