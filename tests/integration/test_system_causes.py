"""Errors name the cause the system gave: a batch output on a read-only file system or a full disk says so
(and what to do), exit 2, before any request is sent and without a traceback. The read-only mount and the
small disk are made for the one command with bubblewrap (a mount namespace of its own); nothing here changes
this machine's mounts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import sandserve_command

from sandserve.tools.local_sandbox import bubblewrap

pytestmark = pytest.mark.skipif(
    bubblewrap() is None or os.geteuid() != 0,
    reason="needs bubblewrap run as root to mount a read-only or a full folder for one command",
)


def batch_in(mounts: list[str], inp: Path, out: Path) -> subprocess.CompletedProcess[str]:
    binary = bubblewrap()
    assert binary is not None
    argv = [binary, "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *mounts, "--"]
    return subprocess.run(
        [*argv, *sandserve_command(), "batch", str(inp), str(out)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def said(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join(done.stderr.split())


@pytest.fixture
def inp(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}
    path.write_text(json.dumps(line) + "\n")
    return path


def test_a_batch_output_on_a_read_only_file_system_says_so(tmp_path: Path, inp: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    done = batch_in(["--ro-bind", str(folder), str(folder)], inp, folder / "out.jsonl")
    assert done.returncode == 2, done.stderr
    assert "Read-only file system" in said(done), done.stderr
    assert "mounted read-only" in said(done)  # what to do
    assert "Traceback" not in done.stderr
    assert list(folder.iterdir()) == []


def test_a_batch_output_on_a_full_disk_says_so(tmp_path: Path, inp: Path) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    done = batch_in(["--size", "65536", "--tmpfs", str(folder)], inp, folder / "out.jsonl")
    assert done.returncode == 2, done.stderr
    assert "No space left on device" in said(done) and "bytes free" in said(done), done.stderr
    assert "The disk is full" in said(done)
    assert "Traceback" not in done.stderr
