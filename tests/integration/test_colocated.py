"""Colocated work: `sandserve exec` / `sandserve run` (and Endpoint.exec / .run) beside the server, on the
Daytona stand-in (inside the endpoint's own sandbox, through the SDK's process and file APIs) and locally
(on this machine, against the real llama-server); the confirmation on a real terminal (a pty); and tool calls
of an endpoint reached through ENDPOINT/TOKEN."""

from __future__ import annotations

import os
import pty
import select
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
from standins.daytona_api import DaytonaStandin

from sandserve.endpoint import Endpoint
from sandserve.errors import ColocatedRunError, ToolSandboxError
from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import free_port
from sandserve.serve import lifecycle
from sandserve.serve.resolve import resolve_spec
from sandserve.tools.declaration import tool
from sandserve.tools.sandboxes import DaytonaToolSandbox, LocalToolSandbox, tool_runner_for

# Reads an uploaded file, asks the server one question through the OpenAI SDK, writes both under out/.
SCRIPT = """
import os, pathlib, sys
from openai import OpenAI

client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"])
reply = client.chat.completions.create(
    model=os.environ["MODEL"], messages=[{"role": "user", "content": "Hi"}], max_tokens=8
)
out = pathlib.Path("out")
(out / "nested").mkdir(parents=True, exist_ok=True)
(out / "answer.txt").write_text(str(reply.usage.completion_tokens))
(out / "nested" / "input-copy.txt").write_text(pathlib.Path("data/input.txt").read_text().upper())
print(
    "endpoint", os.environ["ENDPOINT"],
    "args", sys.argv[1:],
    "marker", os.environ.get("SANDSERVE_HOST_MARKER"),
)
"""


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    standin = DaytonaStandin(
        extra_env={
            **sglang_image_env(),
            "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
            "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": "0.2",
        },
        path_prepend=[Path(sys.executable).parent],
    )
    with standin:
        monkeypatch.setenv("DAYTONA_API_KEY", standin.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", standin.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.1)
        yield standin
        take_everything_down()


def _script_and_data() -> tuple[Path, Path]:
    script = Path("ask.py")
    script.write_text(SCRIPT)
    data = Path("data")
    data.mkdir()
    (data / "input.txt").write_text("hello from this machine")
    return script, data


def _check_run(result: subprocess.CompletedProcess[str], endpoint_url: str, output: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert f"endpoint {endpoint_url} args ['--n', '2'] marker None" in result.stdout
    assert int((output / "answer.txt").read_text()) > 0
    assert (output / "nested" / "input-copy.txt").read_text() == "HELLO FROM THIS MACHINE"


def test_run_inside_the_daytona_sandbox_brings_files_back(daytona, monkeypatch):
    port = free_port()
    endpoint = lifecycle.up(resolve_spec(provider="daytona", port=port))
    script, data = _script_and_data()
    monkeypatch.setenv("SANDSERVE_HOST_MARKER", "on-the-host")  # must not reach the sandbox
    result = run_cli(
        "run", endpoint.id, str(script), "--upload", str(data), "--output", "results", "--", "--n", "2"
    )
    _check_run(result, f"http://localhost:{port}", Path("results"))
    assert f"sandbox {endpoint.sandbox_id}" in result.stderr
    assert len(daytona.sandboxes) == 1  # it ran in the endpoint's own sandbox


def test_exec_inside_the_daytona_sandbox_streams_and_keeps_the_exit_code(daytona):
    endpoint = lifecycle.up(resolve_spec(provider="daytona", port=free_port(), auth="key"))
    result = run_cli(
        "exec", "--", "bash", "-c", 'echo "$ENDPOINT $OPENAI_API_KEY [$TOKEN]"; echo done > out/flag; exit 3'
    )
    assert result.returncode == 3, result.stderr
    inside, key, token = result.stdout.split()
    assert inside.startswith("http://localhost:") and key == endpoint.api_key
    assert token == "[]"  # localhost: no preview proxy, no token (but set, for clients that read it)
    assert Path("out/flag").read_text() == "done\n"
    runs = daytona.sandboxes[endpoint.sandbox_id].runs
    launch = next(i for i, run in enumerate(runs) if "sglang.launch_server" in run.command)
    job = runs[launch + 1 :]  # what ran after the server's launch (before it: up's look for a warm boot)
    assert job and endpoint.api_key not in " ".join(run.command for run in job)  # the key travels in a file


@pytest.mark.usefixtures("llama_server", "tiny_model")
def test_run_and_exec_on_the_local_provider(local_endpoint):
    script, data = _script_and_data()
    result = run_cli("run", str(script), "--upload", str(data), "--", "--n", "2")
    _check_run(result, local_endpoint.url, Path("out"))
    assert "this machine" in result.stderr
    echoed = run_cli("exec", local_endpoint.id, "--", "sh", "-c", "echo $ENDPOINT $TOKEN $OPENAI_API_KEY")
    assert echoed.returncode == 0, echoed.stderr
    url, token, inside_key = echoed.stdout.split()
    assert url == local_endpoint.url and token == local_endpoint.headers[PREVIEW_TOKEN_HEADER]
    # The key code beside the server holds stands in for the token, and only for it.
    chat = {"model": local_endpoint.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    chat_url = f"{local_endpoint.url}/v1/chat/completions"
    bearer = {"Authorization": f"Bearer {inside_key}"}
    assert httpx.post(chat_url, json=chat, headers=bearer, timeout=60).status_code == 200
    wrong = {"Authorization": f"Bearer {token}"}
    assert httpx.post(chat_url, json=chat, headers=wrong, timeout=60).status_code == 401
    assert inside_key not in run_cli("env").stdout + run_cli("ls", "--json").stdout
    hung = run_cli("exec", "--timeout", "1", "--", "sleep", "60", timeout=30)
    assert hung.returncode == 1 and "did not finish within 1 s" in hung.stderr


def test_the_library_twin_on_the_endpoint(daytona, tmp_path):
    endpoint = lifecycle.up(resolve_spec(provider="daytona", port=free_port()))
    chunks: list[str] = []
    result = endpoint.exec(
        ["sh", "-c", "echo one; echo two > out/two.txt"],
        output_dir=tmp_path / "back",
        on_output=chunks.append,
    )
    assert result.exit_code == 0 and "one" in "".join(chunks)
    assert [p.name for p in result.files] == ["two.txt"] and (
        tmp_path / "back" / "two.txt"
    ).read_text() == "two\n"
    with pytest.raises(ColocatedRunError, match="did not finish within 1 s"):
        endpoint.exec(["sleep", "60"], timeout=1)
    sleeper = daytona.sandboxes[endpoint.sandbox_id].runs[-1]
    assert sleeper.command.endswith("sleep 60") and sleeper.done.wait(5)  # its session was deleted: it died


# --- the confirmation on a real terminal --------------------------------------------------------------------


def _on_a_pty(args: list[str], answer: bytes) -> tuple[int, str]:
    """Run the CLI with a pty as its terminal; answer the first question; return exit code and all output."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*sandserve_command(), *args], stdin=follower, stdout=follower, stderr=follower, env=os.environ.copy()
    )
    os.close(follower)
    seen = b""
    answered = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            if (not answered and b"go ahead?" in seen) or (
                not answered and b"deleting their sandboxes?" in seen
            ):
                os.write(leader, answer)
                answered = True
            if process.poll() is not None and not ready:
                break
        return process.wait(timeout=30), seen.decode(errors="replace")
    finally:
        process.kill()
        os.close(leader)


def test_on_a_terminal_the_plan_is_shown_and_a_yes_is_asked_for(daytona):
    args = ["up", "--provider", "daytona", "--port", str(free_port()), "--quiet"]
    code, text = _on_a_pty(args, b"n\n")
    assert code == 1 and "plan" in text and "RTX-PRO-6000" in text and "go ahead?" in text
    assert "Stopped: nothing was created" in text and daytona.create_bodies == []

    code, text = _on_a_pty(args, b"y\n")
    assert code == 0, text
    assert len(daytona.create_bodies) == 1 and "time limit" in text

    code, text = _on_a_pty(["down", "--all"], b"y\n")
    assert code == 0 and "deleting their sandboxes?" in text
    assert daytona.sandboxes == {}


# --- tool calls of an endpoint reached through the environment ----------------------------------------------


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_tool_calls_of_an_env_connected_daytona_endpoint_run_in_a_daytona_sandbox(daytona):
    served = lifecycle.up(resolve_spec(provider="daytona", port=free_port()))
    exports = parse_exports(served.export_lines())
    from_env = Endpoint.from_env(exports)
    assert from_env is not None and from_env.provider == "env"
    with tool_runner_for(from_env, timeout=5) as runner:
        assert isinstance(runner, DaytonaToolSandbox)
        assert runner.run(tool(get_weather), {"city": "Lisbon"}).content == "sunny in Lisbon"
        tools_sandbox = daytona.sandboxes[runner.sandbox_id]
        assert tools_sandbox.labels["sandserve.role"] == "tools" and tools_sandbox.gpu == 0

    # A key-mode endpoint carries no preview token: the ledger still knows it is a Daytona one.
    keyed = lifecycle.up(resolve_spec(provider="daytona", port=free_port(), auth="key"))
    keyed_env = Endpoint.from_env(parse_exports(keyed.export_lines()))
    assert isinstance(tool_runner_for(keyed_env), DaytonaToolSandbox)


def test_without_a_daytona_key_such_tool_calls_are_refused_not_run_here(monkeypatch):
    monkeypatch.delenv("DAYTONA_API_KEY", raising=False)
    endpoint = Endpoint.from_env(
        {"ENDPOINT": "https://8000-abc.proxy.daytona.works", "TOKEN": "preview-token", "MODEL": "m"}
    )
    runner = tool_runner_for(endpoint)
    assert isinstance(runner, DaytonaToolSandbox)
    with pytest.raises(ToolSandboxError, match="Daytona CPU sandbox"):
        runner.run(tool(get_weather), {"city": "Oslo"})
    local = Endpoint.from_env({"ENDPOINT": "http://127.0.0.1:1", "MODEL": "m"})
    assert isinstance(tool_runner_for(local), LocalToolSandbox)
