"""Against the real llama-server: kill -9 mid-batch then a new endpoint, no key on any command line, secrets
masked wherever sandserve shows them, and every bad CLI value refused before anything starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import parse_exports, run_cli, sandserve_command, sglang_image_env
from polling import poll_until

from sandserve.batch.files import errors_path
from sandserve.endpoint import Endpoint
from sandserve.providers.handles import LocalHandle
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry, State
from sandserve.serve.resolve import resolve_spec

pytestmark = pytest.mark.usefixtures("llama_server", "tiny_model")


def said(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join(done.stderr.split())


#: A batch killed after 30 answers: the kill lands mid-batch.
BATCH_SIZE = 150
#: Retries before a batch whose endpoint was killed gives up: each waits up to twice as long as the last (full
#: jitter from 1 s), so the default five waited about 15 s on average, and two about 1.5 s.
GIVE_UP_RETRIES = ["--max-retries", "2"]


def chat_batch(path: Path, count: int, max_tokens: int = 24) -> list[str]:
    ids = [f"q{i}" for i in range(count)]
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": cid,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "messages": [{"role": "user", "content": f"Tell me about number {cid}."}],
                        "max_tokens": max_tokens,
                        "temperature": 0,
                    },
                }
            )
            + "\n"
            for cid in ids
        )
    )
    return ids


def output_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), "half-written line"
    return [json.loads(line) for line in text.splitlines()]


def command_lines() -> dict[int, bytes]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return found


def add_record(registry: Registry, endpoint: Endpoint, *, pid: int | None, error: str | None = None) -> None:
    """A ready row in the ledger for a local server that ran as ``pid`` (gone: the row is dead)."""
    started = {"pid": pid, "start_time": "1"} if pid else {}
    handle = LocalHandle("local", endpoint.id, port=1, log_path="/nonexistent.log", **started)
    registry.add(endpoint.id, provider="local", engine="llamacpp", model="m", spec={}, sandbox=handle)
    registry.update(endpoint.id, state=State.READY, endpoint=endpoint, error=error)


# --- the engine killed mid-batch ----------------------------------------------------------------------------


def test_kill_9_of_the_engine_mid_batch_then_a_new_endpoint_completes_every_request_once(
    tmp_path: Path,
) -> None:
    first = lifecycle.up(resolve_spec("tiny", provider="local"))
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = chat_batch(inp, BATCH_SIZE)
    run = subprocess.Popen(
        [
            *sandserve_command(),
            "batch",
            str(inp),
            str(out),
            "--endpoint",
            first.id,
            "--concurrency",
            "4",
            *GIVE_UP_RETRIES,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= 30, what="30 answers written")
        os.kill(Registry().get(first.id).sandbox.pid, signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    stopped = " ".join(stderr.split())
    assert run.returncode == 3, stderr
    assert "requests still have no result" in stopped and "--endpoint ID" in stopped
    before = output_lines(out)
    assert 30 <= len(before) < BATCH_SIZE, "the engine should have died mid-batch"
    assert all(line["error"] is None for line in before) and not errors_path(out).exists()

    second = lifecycle.up(resolve_spec("tiny", provider="local"))
    resumed = run_cli("batch", str(inp), str(out), "--endpoint", second.id, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    lines = output_lines(out)
    assert Counter(line["custom_id"] for line in lines) == Counter({cid: 1 for cid in ids})
    assert all(line["error"] is None and line["response"]["status_code"] == 200 for line in lines)
    assert not errors_path(out).exists()


def test_a_gateway_killed_mid_batch_loses_nothing_and_a_worker_finishes_the_batch(tmp_path: Path) -> None:
    from sandserve.fleet import fleet_up

    fleet = fleet_up(resolve_spec("tiny", provider="local"), 2, "round_robin")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = chat_batch(inp, BATCH_SIZE)
    run = subprocess.Popen(
        [
            *sandserve_command(),
            "batch",
            str(inp),
            str(out),
            "--endpoint",
            fleet.id,
            "--concurrency",
            "4",
            *GIVE_UP_RETRIES,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= 30, what="30 answers written")
        os.killpg(fleet.gateway.pid, signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 3 and "requests still have no result" in " ".join(stderr.split()), stderr
    before = output_lines(out)
    assert 30 <= len(before) < BATCH_SIZE and all(line["error"] is None for line in before)

    worker = fleet.members[0].endpoint_id
    resumed = run_cli("batch", str(inp), str(out), "--endpoint", worker, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    lines = output_lines(out)
    assert Counter(line["custom_id"] for line in lines) == Counter({cid: 1 for cid in ids})
    assert all(line["error"] is None for line in lines) and not errors_path(out).exists()


# --- keys never on a command line ---------------------------------------------------------------------------


def test_the_api_key_reaches_llama_server_through_its_environment_not_its_command_line() -> None:
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local", auth="key"))
    assert endpoint.api_key
    key = endpoint.api_key.encode()
    holders = [pid for pid, cmdline in command_lines().items() if key in cmdline]
    assert holders == [], f"the key is on the command line of {holders}"
    refused = httpx.get(f"{endpoint.url}/v1/models", timeout=10)
    assert refused.status_code == 401  # the key really guards the server...
    allowed = httpx.get(f"{endpoint.url}/v1/models", headers={"Authorization": f"Bearer {endpoint.api_key}"})
    assert allowed.status_code == 200  # ...and it is the one the server read from LLAMA_API_KEY
    listed = run_cli("ls", "--json")
    assert endpoint.api_key not in listed.stdout + listed.stderr


def test_sglang_in_a_sandbox_gets_its_key_from_the_environment_and_its_log_is_masked() -> None:
    """SGLang takes its key only as a flag and logs its server_args, key included: the key must still be on no
    command line, and neither the boot log echoed by `up` nor `logs` may show it."""
    import sys

    from conftest import take_everything_down
    from standins.daytona_api import DaytonaStandin

    from sandserve.providers.local import free_port

    standin = DaytonaStandin(
        extra_env={
            **sglang_image_env(),
            "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
            "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": "0.2",
        },
        path_prepend=[Path(sys.executable).parent],
    )
    with standin:
        env = {"DAYTONA_API_KEY": standin.api_key, "DAYTONA_API_URL": standin.url}
        try:
            up = run_cli(
                "up", "--provider", "daytona", "--auth", "key", "--yes", "--port", str(free_port()), env=env
            )
            assert up.returncode == 0, up.stderr
            exports = parse_exports(up.stdout)
            key = exports["OPENAI_API_KEY"]
            assert key.startswith("sk-") and "server_args=ServerArgs(" in up.stderr  # the log was echoed...
            assert key not in up.stderr  # ...with the key masked
            holders = [pid for pid, cmdline in command_lines().items() if key.encode() in cmdline]
            assert holders == [], f"the key is on the command line of {holders}"
            record = Registry().list()[0]
            logs = run_cli("logs", record.id, env=env)
            assert "api_key=" in logs.stdout and key not in logs.stdout
            assert key in run_cli("logs", record.id, "--show-secrets", env=env).stdout
            models = httpx.get(f"{exports['ENDPOINT']}/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert models.status_code == 200  # SGLang did get the key, through its environment
        finally:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("DAYTONA_API_KEY", standin.api_key)
                patch.setenv("DAYTONA_API_URL", standin.url)
                take_everything_down()


# --- secrets masked wherever they are shown -----------------------------------------------------------------

SECRETS = {
    "OPENAI_API_KEY": "sk-dry-run-secret-1",
    "HF_TOKEN": "hf_dry_run_secret_2",
    "MY_SERVICE_PASSWORD": "dry-run-secret-3",
}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_dry_run_masks_secret_env_values_and_engine_keys(as_json: bool) -> None:
    args = ["up", "--provider", "local", "--dry-run", "--env", "PLAIN_SETTING=visible-value"]
    for name, value in SECRETS.items():
        args += ["--env", f"{name}={value}"]
    args += ["--engine-arg=--api-key", "--engine-arg=engine-secret-4", *(["--json"] if as_json else [])]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    for secret in [*SECRETS.values(), "engine-secret-4"]:
        assert secret not in shown
    assert "visible-value" in shown and "****" in shown
    if as_json:
        plan = json.loads(done.stdout)
        assert plan["env"]["OPENAI_API_KEY"] == "****" and plan["env"]["PLAIN_SETTING"] == "visible-value"
        assert "--api-key ****" in plan["command"]
    assert Registry().list(include_down=True) == []  # a plan creates nothing


def test_ls_and_status_mask_signed_urls_and_keys_unless_asked() -> None:
    token = "SignedTokenAbcdef123456"
    signed = Endpoint(
        id="signed1",
        url=f"http://127.0.0.1:9/signed/8000-{token}",
        model="m",
        provider="local",
        auth="signed",
    )
    add_record(Registry(), signed, pid=None, error="boot failed: api_key='sk-error-secret-5'")
    for command in (["ls"], ["ls", "--json"], ["status", "signed1"], ["status", "signed1", "--json"]):
        done = run_cli(*command, env={"COLUMNS": "250"})
        assert done.returncode == 0, done.stderr
        assert token not in done.stdout and "sk-error-secret-5" not in done.stdout, command
        assert "8000-****" in done.stdout
    shown = run_cli("status", "signed1", "--json", "--show-secrets")
    assert token in json.loads(shown.stdout)["url"]


# --- a dead endpoint is never the reason to refuse ----------------------------------------------------------


def test_batch_without_endpoint_uses_the_live_one_when_another_is_dead(
    local_endpoint: Endpoint, tmp_path: Path
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = Endpoint(id="dead1", url="http://127.0.0.1:9", model="m", provider="local", auth="public")
    add_record(Registry(), dead, pid=gone.pid)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = chat_batch(inp, 3, max_tokens=4)
    done = run_cli("batch", str(inp), str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(line["custom_id"] for line in output_lines(out)) == sorted(ids)


# --- bad values: exit 2 before anything starts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "99999 is not in the range 1<=x<=65535"),
        (["--port", "-1"], "-1 is not in the range 1<=x<=65535"),
        (["--port", "0"], "0 is not in the range 1<=x<=65535"),
        (["--context-length", "-5"], "-5 is not in the range"),
        (["--boot-timeout", "-5"], "must be a positive number of seconds"),
        (["--boot-timeout", "nan"], "must be a positive number of seconds"),
        (["--create-timeout", "0"], "must be a positive number of seconds"),
        (["--signed-ttl", "0"], "0 is not in the range"),
        (["--env", "1BAD=x"], "'1BAD' is not a valid variable name"),
        (["--env", "NO_VALUE"], "is not NAME=VALUE"),
        (["--engine-arg=--host", "--engine-arg=0.0.0.0"], "listen on 0.0.0.0"),
        (["--engine-arg=--host=::"], "listen on ::"),
    ],
)
def test_bad_up_values_exit_2_and_start_nothing(args: list[str], message: str, isolated: Path) -> None:
    done = run_cli("up", "--provider", "local", *args)
    assert done.returncode == 2 and message in said(done), done.stderr
    assert "Traceback" not in done.stderr
    assert Registry().list(include_down=True) == []
    assert not (isolated / "logs").exists() or not any((isolated / "logs").iterdir()), "no server was started"
    assert processes_working_in(isolated) == []


def processes_working_in(folder: Path) -> list[int]:
    """Processes whose working directory is under ``folder`` (a local server runs in the state's logs/)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "0 is not in the range 1<=x<=256"),
        (["--gateway-port", "70000"], "70000 is not in the range 1<=x<=65535"),
        (["--boot-timeout", "-1"], "must be a positive number of seconds"),
    ],
)
def test_bad_fleet_values_exit_2_and_start_nothing(args: list[str], message: str, isolated: Path) -> None:
    done = run_cli("fleet", "up", "--provider", "local", *args)
    assert done.returncode == 2 and message in said(done), done.stderr
    assert Registry().list(include_down=True) == [] and processes_working_in(isolated) == []


def test_a_wider_bind_is_allowed_with_a_key_in_the_plan() -> None:
    done = run_cli("up", "--provider", "local", "--auth", "key", "--engine-arg=--host=0.0.0.0", "--dry-run")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("option", ["--schema", "--ebnf"])
def test_non_utf8_constraint_files_are_refused_clearly(tmp_path: Path, option: str) -> None:
    bad = tmp_path / "constraint.txt"
    bad.write_bytes(b'{"type": "string", "description": "caf\xe9"}')
    done = run_cli("chat", "hello", option, str(bad))
    assert done.returncode == 2 and "is not UTF-8 text (byte 0xe9 at offset 38)" in said(done), done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--max-tokens", "0"], "0 is not in the range"), (["--temperature", "-1"], "must be between 0 and 2")],
)
def test_bad_chat_values_exit_2(args: list[str], message: str) -> None:
    done = run_cli("chat", "hello", *args)
    assert done.returncode == 2 and message in said(done), done.stderr


def test_classify_says_a_missing_corpus_folder_is_missing(tmp_path: Path) -> None:
    done = run_cli("classify", "--corpus-dir", str(tmp_path / "typo"))
    assert done.returncode == 2 and "does not exist" in said(done) and "typo" in said(done), done.stderr
    assert not (Path.cwd() / "runs").exists()


def test_export_lines_survive_eval_with_spaces_parentheses_and_quotes() -> None:
    endpoint = Endpoint(
        id="e1",
        url="http://127.0.0.1:8000",
        model="My Model (q4)",
        api_key="k'ey with $pace",
        provider="local",
    )
    script = "\n".join(endpoint.export_lines()) + '\nprintf "%s|%s" "$MODEL" "$OPENAI_API_KEY"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0 and done.stdout == "My Model (q4)|k'ey with $pace", done.stderr
