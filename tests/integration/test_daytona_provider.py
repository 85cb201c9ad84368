"""`up --provider daytona` end to end: the real `daytona` SDK against the local stand-in of the Daytona API.

The stand-in's sandboxes run real local processes: the SGLang stand-in (`python3 -m sglang.launch_server`,
printing SGLang's real start-up lines), reached through a preview proxy that enforces the preview token,
signed-URL expiry and the public modes. llama.cpp, which serves from this machine's build, is refused there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import (
    parse_exports,
    run_cli,
    sandserve_command,
    sglang_image_env,
    take_everything_down,
)
from polling import poll_until
from standins.daytona_api import DaytonaStandin

from sandserve.errors import (
    ConfigError,
    EngineDiedError,
    MissingCredentialsError,
    QuotaExceededError,
    SandboxCreateTimeoutError,
)
from sandserve.providers.daytona import LABEL_ENDPOINT, DaytonaProvider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import free_port
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry, State
from sandserve.serve.resolve import resolve_spec


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[DaytonaStandin]:
    ready_file = (
        tmp_path / "sglang-warm"
    )  # absent: the SGLang stand-in keeps answering 503 (still warming up)
    standin = DaytonaStandin(
        extra_env={
            **sglang_image_env(),
            "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
            "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": "0.2",
        },
        path_prepend=[Path(sys.executable).parent],
        vault={"my-hf-token": "hf_from_the_vault"},
    )
    standin.ready_file = ready_file  # type: ignore[attr-defined]
    with standin:
        monkeypatch.setenv("DAYTONA_API_KEY", standin.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", standin.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.1)
        yield standin
        take_everything_down()  # while the stand-in still answers


def sglang_spec(**overrides: object):
    """The default preset, served on a free port (a stand-in sandbox port is a real local port)."""
    overrides.setdefault("port", free_port())
    return resolve_spec(provider="daytona", **overrides)


def test_up_serves_sglang_on_a_gpu_sandbox_end_to_end(daytona):
    endpoint = lifecycle.up(sglang_spec(hf_token="hf_secret_value"))

    sandbox = daytona.sandboxes[endpoint.sandbox_id]
    assert sandbox.gpu == 1 and sandbox.auto_stop_interval == 0 and sandbox.auto_delete_interval == 0
    assert sandbox.labels[LABEL_ENDPOINT] == endpoint.id and not sandbox.public
    assert sandbox.env["HF_TOKEN"] == "hf_secret_value"
    assert "lmsysorg/sglang:v0.5.12.post1-cu130" in sandbox.build_info.dockerfile_content

    assert endpoint.provider == "daytona" and endpoint.engine == "sglang" and endpoint.model == "gpt-oss-20b"
    phases = [step["phase"] for step in endpoint.info["boot_timeline"]]
    assert phases[0] == "sandbox ready" and phases[-1] == "ready"
    # "server ready" (SGLang's "fired up" line) may come just after the first generation: not required here.
    assert {"weights loaded", "kv cache allocated"} <= set(phases)
    assert endpoint.info["kv_pool_tokens"] > 0

    with endpoint.openai() as client:
        reply = client.chat.completions.create(
            model=endpoint.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=64
        )
    assert reply.choices[0].message.content or reply.choices[0].message.reasoning_content
    assert httpx.get(f"{endpoint.url}/v1/models", timeout=10).status_code == 401  # no token, no entry

    record = Registry().get(endpoint.id)
    assert record.state is State.READY and record.sandbox.sandbox_id == endpoint.sandbox_id
    assert "hf_secret_value" not in json.dumps(record.spec)


def test_hf_token_goes_as_a_daytona_secret_when_asked(daytona, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    endpoint = lifecycle.up(sglang_spec(hf_token_secret="my-hf-token"))
    sandbox = daytona.sandboxes[endpoint.sandbox_id]
    assert sandbox.secrets == {"HF_TOKEN": "my-hf-token"}
    assert "HF_TOKEN" not in sandbox.env  # the token itself never leaves this machine


def test_no_hf_token_is_forwarded_when_none_is_set(daytona):
    endpoint = lifecycle.up(sglang_spec())
    sandbox = daytona.sandboxes[endpoint.sandbox_id]
    assert "HF_TOKEN" not in sandbox.env and sandbox.secrets == {}


@pytest.mark.parametrize("model", ["tiny", "smollm2-135m", "model.gguf"])
def test_an_engine_the_sandbox_image_lacks_is_refused_before_anything_is_created(daytona, model):
    # llama.cpp serves from this machine's build and model file: a sandbox from the SGLang image has neither.
    Path("model.gguf").write_bytes(b"GGUF")
    for verb in (("up", "--yes"), ("up", "--dry-run"), ("fleet", "up", "--workers", "2")):
        result = run_cli(*verb, "--provider", "daytona", "--model", model)
        assert result.returncode == 2, result.stderr
        assert "llama.cpp, which runs on this machine only" in result.stderr
        assert "--provider local" in result.stderr and "SGLang" in result.stderr
    with pytest.raises(ConfigError, match="runs on this machine only"):
        lifecycle.up(resolve_spec(model, provider="daytona", gpus=()))
    assert daytona.create_bodies == [] and daytona.sandboxes == {}
    assert not any(path.startswith("/toolbox/") for _method, path in daytona.requests)
    assert Registry().list(include_down=True) == []


def test_token_mode_needs_the_preview_token(daytona):
    endpoint = lifecycle.up(sglang_spec(auth="token"))
    token = endpoint.headers[PREVIEW_TOKEN_HEADER]
    assert httpx.get(f"{endpoint.url}/v1/models", timeout=10).status_code == 401
    assert (
        httpx.get(f"{endpoint.url}/v1/models", headers={PREVIEW_TOKEN_HEADER: token}, timeout=10).status_code
        == 200
    )


def test_signed_mode_works_without_headers_until_it_expires(daytona):
    endpoint = lifecycle.up(sglang_spec(auth="signed", signed_url_ttl=2))
    assert PREVIEW_TOKEN_HEADER not in endpoint.headers and endpoint.api_key is None
    assert httpx.get(f"{endpoint.url}/v1/models", timeout=10).status_code == 200
    assert endpoint.expires_at is not None
    time.sleep(max(0.0, endpoint.expires_at - time.time()) + 0.5)
    assert httpx.get(f"{endpoint.url}/v1/models", timeout=10).status_code == 401


def test_key_mode_is_public_but_sglang_checks_the_key(daytona):
    endpoint = lifecycle.up(sglang_spec(auth="key"))
    assert daytona.sandboxes[endpoint.sandbox_id].public
    assert endpoint.api_key and endpoint.api_key.startswith("sk-")
    assert httpx.get(f"{endpoint.url}/v1/models", timeout=10).status_code == 401
    assert (
        httpx.get(
            f"{endpoint.url}/v1/models", timeout=10, headers={"Authorization": f"Bearer {endpoint.api_key}"}
        ).status_code
        == 200
    )
    with endpoint.openai() as client:
        assert client.models.list().data[0].id == endpoint.model


def test_public_mode_needs_nothing_and_the_cli_warns(daytona):
    result = run_cli(
        "up", "--provider", "daytona", "--auth", "public", "--port", str(free_port()), "--quiet", "--yes"
    )
    assert result.returncode == 0, result.stderr
    assert "PUBLIC" in result.stderr
    exports = parse_exports(result.stdout)
    assert exports["TOKEN"] == ""  # set, and empty: the guide's clients read it unconditionally
    assert httpx.get(f"{exports['ENDPOINT']}/v1/models", timeout=10).status_code == 200


def test_death_during_boot_is_diagnosed_and_the_sandbox_kept(daytona):
    with pytest.raises(EngineDiedError) as caught:
        lifecycle.up(sglang_spec(env={"SANDSERVE_FAKE_SGLANG_FAIL": "kv_oom"}))
    error = caught.value
    assert "--mem-fraction-static" in str(error)
    assert "Not enough memory" in Path(error.log_path).read_text()
    record = Registry().get(error.endpoint_id)
    assert record.state is State.FAILED  # kept, with its weights, as the guide does...
    assert record.sandbox.sandbox_id in daytona.sandboxes

    assert run_cli("down", "--all", "--yes").returncode == 0  # ...and `down --all` still finds it
    assert record.sandbox.sandbox_id in daytona.deleted_ids


def test_delete_on_failure_deletes_the_failed_sandbox(daytona):
    with pytest.raises(EngineDiedError) as caught:
        lifecycle.up(sglang_spec(env={"SANDSERVE_FAKE_SGLANG_FAIL": "gated"}, delete_on_failure=True))
    assert "HF_TOKEN" in str(caught.value)
    record = Registry().get(caught.value.endpoint_id)
    assert record.state is State.DOWN and record.sandbox.sandbox_id in daytona.deleted_ids


def test_a_create_that_times_out_leaves_no_sandbox(daytona):
    daytona.hang_create(30)
    with pytest.raises(SandboxCreateTimeoutError) as caught:
        lifecycle.up(sglang_spec(create_timeout=1))
    assert caught.value.sandbox_id in daytona.deleted_ids
    assert "was deleted" in str(caught.value)
    assert [r.state for r in Registry().list(include_down=True)] == [State.DOWN]


def test_quota_exceeded_is_a_clear_message(daytona):
    daytona.fail_next_create_with_quota()
    with pytest.raises(QuotaExceededError) as caught:
        lifecycle.up(sglang_spec())
    assert "GPU quota exceeded" in str(caught.value) and "sandserve down" in str(caught.value)
    assert daytona.sandboxes == {}


def test_no_key_is_a_clear_error_before_anything_is_written(monkeypatch):
    with pytest.raises(MissingCredentialsError, match="DAYTONA_API_KEY"):
        lifecycle.up(sglang_spec())
    result = run_cli("up", "--provider", "daytona")
    assert result.returncode == 2 and "DAYTONA_API_KEY" in result.stderr
    assert Registry().list(include_down=True) == []


def test_ctrl_c_while_booting_deletes_the_sandbox(daytona):
    # The SGLang stand-in stays in warm-up until its ready file appears: boot waits, then is interrupted.
    process = subprocess.Popen(
        [
            *sandserve_command(),
            "up",
            "--provider",
            "daytona",
            "--yes",
            "--port",
            str(free_port()),
            "--env",
            f"SANDSERVE_FAKE_SGLANG_READY_FILE={daytona.ready_file}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        poll_until(_server_started, what="the server started in its sandbox")
        assert daytona.sandboxes, "no sandbox was created"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert set(daytona.sandboxes) <= set(daytona.deleted_ids) or not daytona.sandboxes
    assert [r.state for r in Registry().list(include_down=True)] == [State.DOWN]


def _server_started() -> bool:
    """The CLI's ledger (same state directory) shows the server command running in its sandbox."""
    return any(getattr(record.sandbox, "cmd_id", None) for record in Registry().list())


def test_ls_shows_daytona_endpoints_and_down_all_spares_other_sandboxes(daytona):
    from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

    foreign = Daytona(DaytonaConfig(api_key=daytona.api_key, api_url=daytona.url)).create(
        CreateSandboxFromSnapshotParams(labels={"owner": "someone else"})
    )
    first = lifecycle.up(sglang_spec())
    second = lifecycle.up(sglang_spec(auth="key"))

    listed = json.loads(run_cli("ls", "--json").stdout)
    assert {(entry["id"], entry["provider"], entry["state"]) for entry in listed} == {
        (first.id, "daytona", "ready"),
        (second.id, "daytona", "ready"),
    }

    assert run_cli("down", "--all", "--yes").returncode == 0
    assert {first.sandbox_id, second.sandbox_id} <= set(daytona.deleted_ids)
    assert foreign.id not in daytona.deleted_ids and foreign.id in daytona.sandboxes


def test_cache_volume_is_mounted_at_the_hugging_face_cache(daytona):
    endpoint = lifecycle.up(sglang_spec(cache_volume="hf-weights"))
    (mount,) = daytona.sandboxes[endpoint.sandbox_id].volumes
    assert mount.mount_path == "/root/.cache/huggingface"
    assert mount.volume_id in {
        volume.id for volume in daytona.volumes.values() if volume.name == "hf-weights"
    }


def test_dry_run_prints_the_plan_and_creates_nothing_without_a_key():
    result = run_cli(
        "up",
        "--provider",
        "daytona",
        "--model",
        "gpt-oss-120b",
        "--auth",
        "key",
        "--dry-run",
        "--json",
        env={"HF_TOKEN": "hf_very_secret"},
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert {"image", "command", "env", "gpu"} <= set(plan)
    assert plan["image"] == "lmsysorg/sglang:v0.5.12.post1-cu130" and plan["gpu"] == ["H100", "RTX-PRO-6000"]
    assert "--mem-fraction-static 0.93" in plan["command"] and "sk-" not in plan["command"]
    assert plan["env"]["SANDSERVE_SGLANG_API_KEY"] == "****"  # the key reaches SGLang by its environment
    assert plan["env"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert plan["env"]["HF_TOKEN"] == "****"
    assert "hf_very_secret" not in result.stdout and "sk-" not in result.stdout
    assert Registry().list(include_down=True) == []
