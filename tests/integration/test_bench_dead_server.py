"""`sandserve bench` against a server that dies mid-run: the level stops, the report says the server went away
and when, no later level runs, and no request is blamed on a stale pooled connection or the client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import sandserve_command
from polling import poll_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_server_that_dies_mid_run_stops_the_benchmark_and_is_named(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "sandserve.observe.scripted", "--port", str(port), "--token-ms", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "bench"
    bench = None
    try:
        poll_until(
            lambda: server.poll() is not None or _answers(url), what="the scripted server", interval=0.1
        )
        assert server.poll() is None, "the scripted server did not start"
        args = ["--concurrency", "1,2,4", "--requests", "12", "--output-len", "20", "--input-len", "4"]
        bench = subprocess.Popen(
            [*sandserve_command(), "bench", *args, "--warmup", "0", "--output", str(out)],
            env={**os.environ, "ENDPOINT": url, "MODEL": "scripted", "COLUMNS": "200"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert bench.stderr is not None
        seen = []
        for line in bench.stderr:
            seen.append(line)
            if "concurrency=1: 12/12" in line:
                break  # the first level is done and the second has started: the server dies now
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        _, rest = bench.communicate(timeout=120)
        stderr = "".join(seen) + rest
    finally:
        for process in (server, bench):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    said = " ".join(stderr.split())
    assert bench.returncode == 1, stderr
    assert "the server went away at" in said and "into concurrency=2" in said, stderr
    assert "pooled connection" not in said and "Traceback" not in stderr
    data = json.loads((out / "bench.json").read_text())
    gone = data["server_gone"]
    assert gone["level"] == "concurrency=2" and gone["at"] > data["started_at"]
    assert "Connect" in gone["reason"]  # what the check got: a refused connection
    first, second = data["levels"]  # concurrency=4 was never run
    assert first["metrics"]["completed"] == 12 and first["unsent"] == 0
    assert second["metrics"]["sent"] + second["unsent"] == 12 and second["unsent"] >= 1
    failed = [r for r in second["requests"] if not r["ok"]]
    assert failed, second["requests"]
    assert all(r["error"].startswith("the server went away") and r["resent"] == 0 for r in failed)
    assert second["metrics"]["resent"] == 0
    report = (out / "report.md").read_text()
    assert "**Stopped**: the server went away at" in report


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/v1/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
