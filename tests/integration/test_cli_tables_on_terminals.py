"""The CLI as a user runs it, at 80 columns: into a pipe (tab-separated, nothing cut) and on a terminal (a
pseudo-terminal 80 columns wide: ids and preset names whole)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import time

from conftest import run_cli, sandserve_command

from sandserve.endpoint import Endpoint
from sandserve.presets import PRESETS


def run_on_a_terminal(*args: str, columns: int = 80) -> str:
    """`sandserve ARGS` with its stdout on a pseudo-terminal ``columns`` wide; what it drew, colours
    removed."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    process = subprocess.Popen(
        [*sandserve_command(), *args], stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    assert process.returncode == 0
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode().replace("\r\n", "\n"))


def test_presets_into_a_pipe_at_80_columns():
    result = run_cli("presets", env={"COLUMNS": "80"})
    assert result.returncode == 0
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header[:2] == ["preset", "model"]
    assert [row[0] for row in rows] == [preset.name for preset in PRESETS]
    assert [row[1] for row in rows] == [preset.model for preset in PRESETS]


def test_presets_on_an_80_column_terminal():
    drawn = run_on_a_terminal("presets")
    assert max(len(line) for line in drawn.splitlines()) <= 80
    for preset in PRESETS:
        assert any(line.startswith(f"{preset.name} ") and preset.model in line for line in drawn.splitlines())


def test_ls_into_a_pipe_and_on_an_80_column_terminal(local_endpoint: Endpoint):
    piped = run_cli("ls", env={"COLUMNS": "80"}).stdout.splitlines()
    assert [line.split("\t")[:2] for line in piped] == [["id", "state"], [local_endpoint.id, "ready"]]
    drawn = run_on_a_terminal("ls")
    assert local_endpoint.id in drawn and local_endpoint.url in drawn and "…" not in drawn
    status = dict(line.split("\t", 1) for line in run_cli("status").stdout.splitlines())
    assert status["id"] == local_endpoint.id and status["url"] == local_endpoint.url
