"""Tools: declared from typed functions, run isolated (a local subprocess, or a Daytona CPU sandbox on the
stand-in), and the standard loop returning a tool's failure to the model."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Literal, Optional

import pytest
from standins.daytona_api import DaytonaStandin

from sandserve.endpoint import Endpoint
from sandserve.errors import ConfigError, ToolDefinitionError
from sandserve.tools.declaration import tool
from sandserve.tools.loop import _execute, run_tool_loop
from sandserve.tools.sandboxes import (
    DaytonaToolSandbox,
    LocalToolSandbox,
    network_namespace_prefix,
    tool_runner_for,
)
from sandserve.workloads.tour import get_weather

LIMIT = 3


# --- tools the model could call (module level: their source travels) ----------------------------------------


def forecast(
    city: str,
    unit: Literal["C", "F"] = "C",
    days: Optional[int] = None,  # noqa: UP045
    hours: list[int] | None = None,
) -> dict:
    """Forecast for a city.

    Args:
        city: The city's name.
        unit: Celsius or Fahrenheit,
            as one letter.
    """
    return {"city": city, "unit": unit, "days": days or 1}


def spins_forever() -> str:
    """Never returns."""
    while True:
        pass


def crashes(city: str) -> str:
    """Always fails."""
    raise ValueError(f"no weather service for {city}")


def writes_to(path: str) -> str:
    """Writes a file."""
    with open(path, "w") as handle:
        handle.write("written")
    return "wrote"


def writes_in_its_own_directory() -> str:
    """Writes where it is allowed to: its cwd and TMPDIR."""
    import os
    import tempfile

    with open("note.txt", "w") as handle:
        handle.write("mine")
    os.mkdir("sub")
    with tempfile.NamedTemporaryFile("w", delete=False) as handle:
        handle.write("tmp")
    return os.getcwd() + "|" + os.environ["HOME"] + "|" + tempfile.gettempdir()


def deletes(path: str) -> str:
    """Deletes a file."""
    import os

    os.remove(path)
    return "deleted"


def makes_directory(path: str) -> str:
    """Makes a directory."""
    import os

    os.mkdir(path)
    return "made"


def connects(port: int) -> str:
    """Opens a TCP connection."""
    import socket

    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return "connected"


def resolves() -> str:
    """Looks up a host name."""
    import socket

    return str(socket.getaddrinfo("localhost", 80))


def spawns() -> str:
    """Starts a process."""
    import subprocess

    return subprocess.run(["true"]).returncode


def uses_a_global(x: int) -> int:
    """Reads a module constant."""
    return x + LIMIT


# --- declaring ----------------------------------------------------------------------------------------------


def test_the_schema_comes_from_the_signature_and_docstring():
    spec = tool(forecast).spec()
    assert spec["function"]["name"] == "forecast"
    assert spec["function"]["description"] == "Forecast for a city."
    parameters = spec["function"]["parameters"]
    assert parameters["required"] == ["city"]
    assert parameters["properties"] == {
        "city": {"type": "string", "description": "The city's name."},
        "unit": {
            "enum": ["C", "F"],
            "type": "string",
            "default": "C",
            "description": "Celsius or Fahrenheit, as one letter.",
        },
        "days": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "hours": {
            "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}],
            "default": None,
        },
    }


def test_the_guides_get_weather_carries_its_import():
    weather = tool(get_weather)
    assert "import random" in weather.source
    assert weather.spec()["function"]["parameters"]["required"] == ["city"]


def test_functions_that_cannot_travel_are_refused_when_declared():
    with pytest.raises(ToolDefinitionError, match="LIMIT"):
        tool(uses_a_global)
    with pytest.raises(ToolDefinitionError, match="plain"):
        tool(lambda city: city)  # type: ignore[arg-type, return-value]

    def untyped(city):  # type: ignore[no-untyped-def]
        return city

    with pytest.raises(ToolDefinitionError, match="annotation"):
        tool(untyped)


# --- the local sandbox --------------------------------------------------------------------------------------


@pytest.fixture
def sandbox() -> LocalToolSandbox:
    return LocalToolSandbox(timeout=5)


def test_a_tool_runs_and_its_result_comes_back(sandbox):
    outcome = sandbox.run(tool(get_weather), {"city": "Lisbon"})
    assert outcome.ok and re.fullmatch(r"-?\d+°C and \w+ in Lisbon", outcome.content)
    porto = sandbox.run(tool(forecast), {"city": "Porto"})
    assert porto.content == '{"city": "Porto", "unit": "C", "days": 1}'


def test_a_tool_that_loops_forever_is_stopped_at_its_limit():
    sandbox = LocalToolSandbox(timeout=1)
    started = time.monotonic()
    outcome = sandbox.run(tool(spins_forever), {})
    assert not outcome.ok and "did not finish within 1 s" in outcome.content
    assert time.monotonic() - started < 10


def test_a_crash_or_bad_arguments_come_back_as_an_error(sandbox):
    outcome = sandbox.run(tool(crashes), {"city": "Lisbon"})
    assert not outcome.ok and outcome.content == "error: ValueError: no weather service for Lisbon"
    missing = sandbox.run(tool(get_weather), {})
    assert not missing.ok and "missing 1 required positional argument: 'city'" in missing.content
    unknown = sandbox.run(tool(get_weather), {"town": "x"})
    assert not unknown.ok and "unexpected keyword argument 'town'" in unknown.content


def test_writes_outside_its_temp_dir_fail(sandbox, tmp_path: Path):
    target = tmp_path / "outside.txt"
    outcome = sandbox.run(tool(writes_to), {"path": str(target)})
    assert not outcome.ok and "PermissionError" in outcome.content
    assert "outside the tool's own directory" in outcome.content
    assert not target.exists()

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    assert not sandbox.run(tool(deletes), {"path": str(victim)}).ok
    assert victim.read_text() == "keep me"
    assert not sandbox.run(tool(makes_directory), {"path": str(tmp_path / "new")}).ok
    assert not (tmp_path / "new").exists()
    escape = sandbox.run(tool(writes_to), {"path": "../escaped.txt"})  # relative paths resolve too
    assert not escape.ok


def test_writes_inside_its_own_directory_work(sandbox):
    outcome = sandbox.run(tool(writes_in_its_own_directory), {})
    assert outcome.ok, outcome.content
    cwd, home, tmp = outcome.content.split("|")
    assert cwd == home == tmp and Path(cwd).name.startswith("sandserve-tool-")
    assert not Path(cwd).exists()  # removed after the call


@pytest.fixture
def listener() -> tuple[int, list[socket.socket]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()
    for conn in accepted:
        conn.close()


def test_network_connections_fail(sandbox, listener):
    port, accepted = listener
    outcome = sandbox.run(tool(connects), {"port": port})
    assert not outcome.ok and "network access" in outcome.content
    assert not sandbox.run(tool(resolves), {}).ok
    time.sleep(0.3)
    assert accepted == []
    assert not sandbox.run(tool(spawns), {}).ok


def test_the_network_namespace_holds_without_the_audit_hook(listener):
    """Where this machine allows `unshare --net`, even code the audit hook never sees has no network."""
    prefix = network_namespace_prefix()
    if not prefix:
        pytest.skip("no network namespaces on this machine (the audit hook is the only network guard here)")
    port, accepted = listener
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    done = subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and ("unreachable" in done.stderr or "refused" in done.stderr)
    assert accepted == []


# --- the loop -----------------------------------------------------------------------------------------------


def test_bad_calls_become_tool_messages_not_exceptions(sandbox):
    tools = {"get_weather": tool(get_weather)}

    def call(name: str, arguments: str) -> SimpleNamespace:
        return SimpleNamespace(function=SimpleNamespace(name=name, arguments=arguments))

    assert "no tool named 'launch'" in _execute(call("launch", "{}"), tools, sandbox).result
    assert "not valid JSON" in _execute(call("get_weather", '{"city": '), tools, sandbox).result
    assert "must be a JSON object" in _execute(call("get_weather", "[1]"), tools, sandbox).result


@pytest.mark.usefixtures("llama_server", "tiny_model")
def test_the_loop_returns_a_tools_error_to_the_model(local_endpoint, sandbox):
    messages = [{"role": "user", "content": "What is the weather in Lisbon?"}]
    result = run_tool_loop(
        local_endpoint, messages, [tool(crashes)], sandbox, force_tool="crashes", max_tokens=32
    )
    assert [call.name for call in result.calls] == ["crashes"]
    assert not result.calls[0].ok
    assert result.calls[0].result.startswith("error: ValueError: no weather service")
    tool_messages = [m for m in result.messages if m["role"] == "tool"]
    assert tool_messages and tool_messages[0]["content"] == result.calls[0].result
    assert result.rounds == 2 and result.messages[-1]["role"] == "assistant"


@pytest.mark.usefixtures("llama_server", "tiny_model")
def test_the_forced_weather_call_goes_through_the_whole_loop(local_endpoint, sandbox):
    messages = [{"role": "user", "content": "Write a haiku about the current weather in Lisbon."}]
    result = run_tool_loop(
        local_endpoint, messages, [tool(get_weather)], sandbox, force_tool="get_weather", max_tokens=32
    )
    assert result.forced and result.calls[0].name == "get_weather"
    assert result.calls[0].ok, result.calls[0].result
    assert re.match(r"-?\d+°C and (sunny|cloudy|rainy|foggy|windy) in ", result.calls[0].result)
    assert result.rounds == 2 and isinstance(result.answer, str)
    assert len(result.cache) == 2 and result.cache[1].cached_tokens > 0  # the second turn reuses the first


def test_forcing_an_unknown_tool_is_refused(sandbox):
    endpoint = Endpoint(id="x", url="http://127.0.0.1:9", model="m", engine="llamacpp")
    with pytest.raises(ConfigError, match="force_tool='nope'"):
        run_tool_loop(endpoint, [], [tool(get_weather)], sandbox, force_tool="nope")


# --- the Daytona CPU sandbox (on the stand-in) --------------------------------------------------------------


@pytest.fixture
def daytona_api(monkeypatch: pytest.MonkeyPatch) -> DaytonaStandin:
    with DaytonaStandin() as api:
        monkeypatch.setenv("DAYTONA_API_KEY", api.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", api.url)
        yield api


def test_daytona_tool_sandbox_is_created_on_first_use_and_deleted_at_the_end(daytona_api):
    endpoint = Endpoint(id="gpt-oss-20b-abc123", url="http://x", model="gpt-oss-20b", provider="daytona")
    with tool_runner_for(endpoint, timeout=5) as runner:
        assert isinstance(runner, DaytonaToolSandbox)
        assert daytona_api.sandboxes == {}  # nothing until a tool is called
        outcome = runner.run(tool(get_weather), {"city": "Lisbon"})
        assert outcome.ok and outcome.content.endswith("in Lisbon")
        sandbox_id = runner.sandbox_id
        record = daytona_api.sandboxes[sandbox_id]
        assert (
            record.labels.items()
            >= {
                "sandserve": "1",
                "sandserve.role": "tools",
                "sandserve.tools-for": "gpt-oss-20b-abc123",
            }.items()
        )
        assert record.auto_delete_interval == 0  # ephemeral
        crash = runner.run(tool(crashes), {"city": "Lisbon"})
        assert not crash.ok and crash.content == "error: ValueError: no weather service for Lisbon"
        assert runner.run(tool(forecast), {"city": "Porto"}).content.startswith('{"city": "Porto"')
        assert len(daytona_api.sandboxes) == 1  # one sandbox for the whole session
    assert sandbox_id in daytona_api.deleted_ids and sandbox_id not in daytona_api.sandboxes


def test_daytona_tool_that_loops_forever_is_stopped(daytona_api):
    with DaytonaToolSandbox("e", timeout=1) as runner:
        outcome = runner.run(tool(spins_forever), {})
        assert not outcome.ok and "did not finish within 1 s" in outcome.content
        assert runner.run(tool(get_weather), {"city": "Oslo"}).ok  # the sandbox is still usable


def test_a_tool_declaring_local_paths_is_refused_on_daytona_before_a_sandbox_is_made(daytona_api):
    with DaytonaToolSandbox("e", timeout=5) as runner:
        outcome = runner.run(tool(get_weather, paths=["/srv/data"]), {"city": "Oslo"})
        assert not outcome.ok and "/srv/data" in outcome.content and "Daytona" in outcome.content
        assert runner.sandbox_id is None and not daytona_api.sandboxes


def test_tools_run_locally_for_local_endpoints():
    endpoint = Endpoint(id="x", url="http://127.0.0.1:1", model="m", provider="local")
    runner = tool_runner_for(endpoint)
    assert isinstance(runner, LocalToolSandbox) and "audit hook" in runner.isolation
    assert os.environ.get("DAYTONA_API_KEY") is None
