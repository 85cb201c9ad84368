"""`up --dry-run`'s plan (nothing created, every secret masked) and the lines a user reads once it is up."""

from __future__ import annotations

import time

from sandserve import resolve_spec
from sandserve.cli.handoff import handoff_lines
from sandserve.cli.program import program
from sandserve.endpoint import Endpoint
from sandserve.serve.plan import plan


def test_a_daytona_plan_shows_the_command_with_every_secret_masked(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret")
    spec = resolve_spec("qwen3-8b", provider="daytona", auth="key", api_key="sk-very-secret")
    shown = plan(spec)
    assert shown["provider"] == "daytona" and shown["public"] is True and shown["port"] == 8000
    assert "sglang.launch_server" in shown["command"] and "--model-path Qwen/Qwen3-8B" in shown["command"]
    assert shown["env"] == {"HF_TOKEN": "****", "SANDSERVE_SGLANG_API_KEY": "****"}  # the key: never on argv
    assert "very_secret" not in str(shown) and "very-secret" not in str(shown)
    assert shown["keep_on_failure"] is True


def test_a_token_mode_plan_is_private_and_an_hf_secret_is_named_not_shown(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret")
    shown = plan(resolve_spec("llama-3.1-8b", provider="daytona", hf_token_secret="my-hf"))
    assert shown["public"] is False and shown["auth"] == "token"
    assert shown["secrets"] == {"HF_TOKEN": "my-hf"} and "HF_TOKEN" not in shown["env"]


def test_a_local_plan_names_the_binary_and_the_model_to_be_written():
    shown = plan(resolve_spec("tiny", provider="local"))
    assert shown["provider"] == "local" and shown["port"] == "a free port"
    assert shown["model"] == "tiny (random weights, written on first use)"
    assert "--host 127.0.0.1" in shown["command"] and "--alias tiny-random-llama" in shown["command"]


def endpoint(**changes: object) -> Endpoint:
    fields: dict[str, object] = {
        "id": "qwen3-8b-a1b2c3",
        "url": "https://8000-sbx.proxy.daytona.works",
        "model": "qwen3-8b",
        "engine": "sglang",
        "provider": "daytona",
        "auth": "token",
        "sandbox_id": "sbx-123",
        "info": {
            "kv_pool_tokens": 1_220_512,
            "boot_timeline": [
                {"phase": "weights loaded", "seconds": 61.4},
                {"phase": "ready", "seconds": 75.0},
            ],
        },
        **changes,
    }
    return Endpoint(**fields)  # type: ignore[arg-type]


def test_a_daytona_handoff_says_the_sandbox_is_left_up_and_how_to_delete_it():
    lines = handoff_lines(endpoint())
    assert "[bold green]ready[/]: qwen3-8b-a1b2c3 serves [bold]qwen3-8b[/] at https://8000-sbx" in lines[1]
    assert "  KV pool: 1,220,512 tokens (max_total_num_tokens)" in lines
    assert "  boot: weights loaded 61.4s, ready 75.0s" in lines
    assert "  sandbox left UP: sbx-123" in lines and f"  delete:    {program()} down qwen3-8b-a1b2c3" in lines
    assert not any("PUBLIC" in line for line in lines)


def test_a_public_endpoint_is_called_public():
    assert any("PUBLIC" in line for line in handoff_lines(endpoint(auth="public")))
    local = endpoint(auth="public", provider="local", url="http://127.0.0.1:8080", sandbox_id=None)
    lines = handoff_lines(local)
    assert not any("PUBLIC" in line for line in lines)
    assert f'  again:     eval "$({program()} env qwen3-8b-a1b2c3)"' in lines


def test_a_signed_url_says_when_it_expires():
    lines = handoff_lines(endpoint(auth="signed", expires_at=time.time() + 30 * 60 + 30))
    assert "  the signed URL expires in 30 min" in lines
