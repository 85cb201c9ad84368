"""A test that runs past pytest-timeout's limit still takes down the local servers it started.

pytest-timeout's ``signal`` method (this project's: ``timeout`` in pyproject.toml, no method named) fails the
test from inside it, so its fixtures' teardown runs, and conftest's ``isolated`` takes down what the test's
ledger lists. Proved here in a pytest of its own, on an xdist worker as `make test` runs (a worker runs
tests in its main thread, so the signal method holds there too): one test stuck after its server came up,
one stopped while its server boots, then a third, in the same process, finds every process they started
gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TESTS_DIR

from sandserve.providers.local import live_group_members
from sandserve.serve.ledger import Registry

INNER = """
import os
import time
from pathlib import Path

import pytest

from sandserve.providers.local import live_group_members
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry
from sandserve.serve.resolve import resolve_spec

BASETEMP = Path(os.environ["INNER_BASETEMP"])


# The limits leave a machine several times slower than a quiet one room for the tiny model's boot (about a
# second) and for the start of its server process.
@pytest.mark.timeout(8)
def test_stuck_after_its_server_came_up():
    lifecycle.up(resolve_spec("tiny", provider="local"))
    time.sleep(600)


@pytest.mark.timeout(6)
def test_stopped_while_its_server_boots(monkeypatch):
    # The tiny model is ready within a second: this boot is made to wait for ever once its server runs.
    monkeypatch.setattr(lifecycle, "_wait_until_ready", lambda *args: time.sleep(600))
    lifecycle.up(resolve_spec("tiny", provider="local"))


def test_nothing_they_started_still_runs(monkeypatch):
    pids = []
    for state in BASETEMP.glob("**/test_st*0/state"):
        monkeypatch.setenv("SANDSERVE_STATE_DIR", str(state))
        pids += [record.sandbox.pid for record in Registry().list(include_down=True) if record.sandbox.pid]
    assert len(pids) == 2, "each test started its server"
    assert {pid: live_group_members(pid) for pid in pids} == {pid: [] for pid in pids}
"""


def kill_what_is_left(basetemp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the safety net fail, this test still leaves nothing of the inner run's running."""
    for state in basetemp.glob("**/state"):
        monkeypatch.setenv("SANDSERVE_STATE_DIR", str(state))
        for record in Registry().list(include_down=True):
            if record.sandbox.pid and live_group_members(record.sandbox.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(record.sandbox.pid, signal.SIGKILL)


def test_a_timed_out_test_leaves_no_local_server_running(
    llama_server: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    basetemp = tmp_path / "inner"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "INNER_BASETEMP": str(basetemp),
    }
    argv = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-c", os.devnull]
    argv += ["--rootdir", str(tmp_path), "--basetemp", str(basetemp), "-n", "1", "-v", "test_inner.py"]
    try:
        inner = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    finally:
        kill_what_is_left(basetemp, monkeypatch)
    told = inner.stdout + inner.stderr
    # Both were stopped by pytest-timeout, not by an error of their own; the third found nothing running.
    assert "FAILED test_inner.py::test_stuck_after_its_server_came_up - Failed: Timeout" in told, told
    assert "FAILED test_inner.py::test_stopped_while_its_server_boots - Failed: Timeout" in told, told
    assert "2 failed, 1 passed" in told, told
