"""`up` / `down` and the ledger against the real llama-server, through the library and the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import as_typed, parse_exports, run_cli, sandserve_command
from polling import poll_until, poll_while

from sandserve.engines.batch_server import BATCH_NICE_ENV
from sandserve.engines.llamacpp import MAX_SLOT_CONTEXT, MachineFit, running_llama_servers
from sandserve.engines.load_formats import parse_slots
from sandserve.engines.tinymodel import write_corrupt_model
from sandserve.errors import BootTimeoutError, EngineDiedError, LedgerCorruptError
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import live_group_members, port_is_free, process_start_time
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry, State
from sandserve.serve.resolve import resolve_spec

pytestmark = pytest.mark.usefixtures("llama_server", "tiny_model")


def wrapper_engine(tmp_path: Path, body: str) -> Path:
    """An executable that stands where llama-server is expected (for slow or hung boots)."""
    script = tmp_path / "engine.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def process_alive(pid: int) -> bool:
    return process_start_time(pid) is not None


def test_up_serves_a_real_generation_and_down_frees_everything(local_endpoint):
    with local_endpoint.openai() as client:
        reply = client.chat.completions.create(
            model=local_endpoint.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
        )
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0

    record = Registry().get(local_endpoint.id)
    assert record.state is State.READY
    pid, port = record.sandbox.pid, record.sandbox.port
    assert process_alive(pid)
    assert not port_is_free(port)
    # The tiny model was trained for 32k tokens: each slot gets the bounded share, one slot per batch lane.
    assert record.endpoint.info["kv_pool_tokens"] == MAX_SLOT_CONTEXT * MachineFit().slots
    # The next local server started here counts this one as sharing the cores.
    assert running_llama_servers() >= 1 and MachineFit().others >= 1
    phases = [step["phase"] for step in record.endpoint.info["boot_timeline"]]
    assert phases[0] == "sandbox ready" and phases[-1] == "ready"

    lifecycle.down(record, Registry())
    assert not process_alive(pid)
    assert port_is_free(port)
    assert Registry().get(local_endpoint.id).state is State.DOWN


def test_cli_up_prints_exports_that_curl_style_clients_can_use():
    result = run_cli("up", "--provider", "local", "--model", "tiny", "--quiet")
    assert result.returncode == 0, result.stderr
    exports = parse_exports(result.stdout)
    assert set(exports) == {
        "ENDPOINT",
        "MODEL",
        "TOKEN",
    }  # the same story as on Daytona: the token is enforced
    body = {"model": exports["MODEL"], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    url = f"{exports['ENDPOINT']}/v1/chat/completions"
    assert httpx.post(url, timeout=30, json=body).status_code == 401
    assert httpx.post(url, timeout=30, json=body, headers={PREVIEW_TOKEN_HEADER: "wrong"}).status_code == 401
    response = httpx.post(url, timeout=30, json=body, headers={PREVIEW_TOKEN_HEADER: exports["TOKEN"]})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]

    listed = json.loads(run_cli("ls", "--json").stdout)
    assert [entry["state"] for entry in listed] == ["ready"]
    assert run_cli("env").stdout.splitlines() == result.stdout.splitlines()

    down = run_cli("down", "--all", "--yes")
    assert down.returncode == 0, down.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{exports['ENDPOINT']}/health", timeout=5)
    assert json.loads(run_cli("ls", "--json").stdout) == []


def test_up_json_has_the_documented_keys():
    result = run_cli("up", "--provider", "local", "--model", "tiny", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"id", "endpoint", "model", "provider", "headers"} <= set(data)
    assert data["provider"] == "local" and data["model"] == "tiny-random-llama"
    assert httpx.get(f"{data['endpoint']}/health", headers=data["headers"], timeout=10).status_code == 200


def test_local_key_mode_is_enforced_and_signed_is_refused():
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local", auth="key"))
    body = {"prompt": "x", "max_tokens": 1}
    assert httpx.post(f"{endpoint.url}/v1/completions", json=body, timeout=10).status_code == 401
    assert httpx.get(f"{endpoint.url}/health", timeout=10).status_code == 200  # open, as SGLang's
    assert endpoint.auth == "key" and endpoint.api_key
    keyed = httpx.post(
        f"{endpoint.url}/v1/completions", json=body, headers=endpoint.request_headers(), timeout=10
    )
    assert keyed.status_code == 200

    result = run_cli("up", "--provider", "local", "--model", "tiny", "--auth", "signed")
    assert result.returncode == 2 and "signed URL" in result.stderr and "--auth token" in result.stderr


LISTS_MODELS_BEFORE_IT_CAN_GENERATE = """#!{python}
# Answers /health and /v1/models at once but cannot generate for a while, then becomes llama-server.
import http.server, os, sys, threading, time
port = int(sys.argv[sys.argv.index("--port") + 1])
seen = open({seen!r}, "a", buffering=1)
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        status = 200 if self.path in ("/health", "/v1/models") else 503
        seen.write(f"{{self.command}} {{self.path}} {{status}}\\n")
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{{}}")
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
time.sleep(1.5)
server.shutdown()
server.server_close()
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


def test_readiness_means_a_real_generation_not_an_open_port(tmp_path, monkeypatch, llama_server):
    seen = tmp_path / "requests-before-the-engine.txt"
    script = tmp_path / "engine.py"
    script.write_text(
        LISTS_MODELS_BEFORE_IT_CAN_GENERATE.format(
            python=sys.executable, seen=str(seen), real=str(llama_server)
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("SANDSERVE_LLAMA_SERVER", str(script))
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local"))
    probes = seen.read_text().splitlines()
    assert "POST /v1/completions 503" in probes  # up asked for a generation and was refused...
    assert not any(line.startswith("GET /v1/models") for line in probes)  # ...never trusting /v1/models
    first = httpx.post(
        f"{endpoint.url}/v1/completions",
        json={"prompt": "a", "max_tokens": 1},
        headers=endpoint.request_headers(),
        timeout=10,
    )
    assert first.status_code == 200  # ...and returned only once the real engine generated


def test_death_during_boot_saves_the_log_and_names_the_cause(tmp_path):
    corrupt = write_corrupt_model(tmp_path / "broken.gguf")
    with pytest.raises(EngineDiedError) as caught:
        lifecycle.up(resolve_spec(str(corrupt), provider="local"))
    error = caught.value
    assert error.exit_code_seen not in (None, 0) or error.diagnosis
    assert "model file could not be loaded" in str(error)
    assert error.log_path and "failed to load model" in Path(error.log_path).read_text()
    record = Registry().get(error.endpoint_id)
    assert record.state is State.DOWN and record.log_path == str(error.log_path)


def test_cli_reports_a_dead_boot_with_a_non_zero_exit(tmp_path):
    corrupt = write_corrupt_model(tmp_path / "broken.gguf")
    result = run_cli("up", "--model", str(corrupt), "--provider", "local", "--quiet")
    assert result.returncode == 1
    assert "model file could not be loaded" in result.stderr
    assert result.stdout == ""  # nothing for eval to pick up


def test_boot_timeout_stops_the_server(tmp_path, monkeypatch):
    hung = wrapper_engine(tmp_path, "exec sleep 600")
    monkeypatch.setenv("SANDSERVE_LLAMA_SERVER", str(hung))
    with pytest.raises(BootTimeoutError) as caught:
        lifecycle.up(resolve_spec("tiny", provider="local", boot_timeout=1.0))
    record = Registry().get(caught.value.endpoint_id)
    assert record.state is State.DOWN
    assert not process_alive(record.sandbox.pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_interrupting_a_boot_leaves_no_orphan(tmp_path, sig):
    marker = tmp_path / "engine.pid"
    hung = wrapper_engine(tmp_path, f"echo $$ > {marker}\nsleep 600 &\nwait")
    process = subprocess.Popen(
        [*sandserve_command(), "up", "--provider", "local", "--model", "tiny"],
        env={**os.environ, "SANDSERVE_LLAMA_SERVER": str(hung)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        engine_pid = int(
            poll_until(lambda: marker.exists() and marker.read_text().strip(), what="the engine")
        )
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, (process.returncode, stderr)
    assert "Interrupted while booting" in stderr
    assert not process_alive(engine_pid)
    # The sleep child shared the engine's process group: it is gone too.
    assert live_group_members(engine_pid) == []
    assert Registry().list() == []


def test_two_endpoints_at_once_are_independent():
    first = lifecycle.up(resolve_spec("tiny", provider="local"))
    second = lifecycle.up(resolve_spec("tiny", provider="local"))
    assert first.url != second.url and first.headers != second.headers  # a token each
    for endpoint in (first, second):
        body = {"prompt": "x", "max_tokens": 2}
        answer = httpx.post(
            f"{endpoint.url}/v1/completions", json=body, headers=endpoint.request_headers(), timeout=10
        )
        assert answer.status_code == 200
    assert run_cli("down", "--all", "--yes").returncode == 0
    assert all(record.state is State.DOWN for record in Registry().list(include_down=True))


def test_the_ledger_survives_restarts_and_marks_dead_endpoints(local_endpoint, isolated):
    ledger = isolated / "ledger.sqlite3"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600

    # A new process reads the same ledger.
    listed = json.loads(run_cli("ls", "--json").stdout)
    assert [entry["id"] for entry in listed] == [local_endpoint.id]
    assert listed[0]["state"] == "ready"

    pid = Registry().get(local_endpoint.id).sandbox.pid
    os.killpg(pid, signal.SIGKILL)
    poll_while(lambda: process_alive(pid), what="the killed server gone")
    listed = json.loads(run_cli("ls", "--json").stdout)
    assert listed[0]["state"] == "dead"
    status = run_cli("status", local_endpoint.id)
    assert "dead" in status.stdout and "its server is gone" in status.stdout


# --- bad input ----------------------------------------------------------------------------------------


def test_unknown_preset_is_a_clear_error():
    result = run_cli("up", "--provider", "local", "--model", "no-such-model")
    assert result.returncode == 2
    assert "Unknown model preset 'no-such-model'" in result.stderr and "sandserve presets" in as_typed(
        result.stderr
    )


def test_missing_model_file_is_a_clear_error(tmp_path):
    result = run_cli("up", "--provider", "local", "--model", str(tmp_path / "nope.gguf"))
    assert result.returncode == 2
    assert "Model file not found" in result.stderr


def test_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("up", "--provider", "local", "--model", "tiny", "--port", str(port))
    assert result.returncode == 2
    assert f"Port {port}" in result.stderr and "already in use" in result.stderr
    assert Registry().list(include_down=True) == []


def test_unusable_state_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("ls", env={"SANDSERVE_STATE_DIR": str(blocker / "state")})
    assert result.returncode == 2
    assert "Cannot use the state directory" in result.stderr and "SANDSERVE_STATE_DIR" in result.stderr


def test_corrupt_ledger_is_a_clear_error_and_left_as_it_was(isolated):
    isolated.mkdir(parents=True, exist_ok=True)
    ledger = isolated / "ledger.sqlite3"
    garbage = b"this is not a sqlite database" * 100
    ledger.write_bytes(garbage)
    result = run_cli("ls")
    assert result.returncode == 2
    assert "cannot be read" in result.stderr and "mv " in result.stderr
    assert ledger.read_bytes() == garbage
    with pytest.raises(LedgerCorruptError):
        Registry()


def _ask_at_low_priority(endpoint) -> None:
    low = {"model": endpoint.model, "messages": [{"role": "user", "content": "hi"}], "priority": -1}
    answer = httpx.post(
        f"{endpoint.base_url}/chat/completions",
        json={**low, "max_tokens": 2},
        headers=endpoint.request_headers(),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture
def default_batch_niceness(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's llama-server under its default policy (the suite sets a niceness: conftest.py says why)."""
    monkeypatch.delenv(BATCH_NICE_ENV, raising=False)


def test_the_batchs_llama_server_runs_at_the_lowest_scheduling_priority(
    default_batch_niceness, local_endpoint
):
    """The adapter and the people's llama-server, its child, keep the scheduling the adapter was started
    with; the batch's llama-server, started by the first low-priority request, runs under SCHED_IDLE, below
    everything else."""
    adapter = Registry().get(local_endpoint.id).sandbox.pid
    [people] = [pid for pid in live_group_members(adapter) if pid != adapter]
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, adapter) == base
    assert os.getpriority(os.PRIO_PROCESS, people) == base
    _ask_at_low_priority(local_endpoint)  # starts the batch's llama-server
    [batch] = [pid for pid in live_group_members(adapter) if pid not in (adapter, people)]
    assert os.sched_getscheduler(batch) == os.SCHED_IDLE
    assert os.sched_getscheduler(people) == os.sched_getscheduler(adapter) == os.SCHED_OTHER


def test_llama_server_never_outlives_its_adapter(local_endpoint):
    """kill -9 of the adapter (the process `up` recorded) takes its llama-servers with it (the people's, and
    the batch's that a low-priority request started), and `down` still stops a group whose leader died
    first."""
    record = Registry().get(local_endpoint.id)
    adapter = record.sandbox.pid
    assert len(live_group_members(adapter)) == 2  # the adapter and the people's llama-server
    _ask_at_low_priority(local_endpoint)  # starts the batch's llama-server
    assert len(live_group_members(adapter)) == 3  # and the batch's
    os.kill(adapter, signal.SIGKILL)
    poll_while(lambda: live_group_members(adapter), what="both llama-servers gone with their adapter")
    lifecycle.down(record, Registry())
    assert Registry().get(local_endpoint.id).state is State.DOWN


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_stopped_server_ends_the_answers_in_flight_instead_of_waiting_for_them(local_endpoint, stream):
    """SIGTERM to the endpoint's process group (what `down` sends first) with two long answers in flight:
    both processes end on it. An answer asked for whole held llama-server, which waits for its clients to
    close, while the adapter waited for its handlers, until `down` sent SIGKILL 5 s later."""
    adapter = Registry().get(local_endpoint.id).sandbox.pid
    body = {
        "model": local_endpoint.model,
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 4000,
        "ignore_eos": True,
        "stream": stream,
    }

    def ask() -> None:
        url = f"{local_endpoint.base_url}/chat/completions"
        with contextlib.suppress(httpx.HTTPError):  # the answer is cut off: how it ends is not asserted
            httpx.post(url, json=body, headers=local_endpoint.request_headers(), timeout=60)

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(2)]
    for asker in askers:
        asker.start()
    poll_until(lambda: _slots_processing(local_endpoint) == 2, what="both answers under way")
    os.killpg(adapter, signal.SIGTERM)
    # Before, both stayed until aiohttp's 60 s wait for its handlers ran out (`down` sends SIGKILL after 5 s).
    poll_while(lambda: live_group_members(adapter), what="both gone on SIGTERM", timeout=20)
    for asker in askers:
        asker.join(timeout=10)


def _slots_processing(endpoint) -> int:
    answer = httpx.get(f"{endpoint.url}/slots", headers=endpoint.request_headers(), timeout=10)
    return int(parse_slots(answer.json()).running or 0)
