"""Rows an `up --provider daytona` left booting when it was killed: the real `daytona` SDK against the local
stand-in of the Daytona API (its sandboxes run the SGLang stand-in as a real process)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sglang_image_env, take_everything_down
from standins.daytona_api import DaytonaStandin

from sandserve.providers.daytona import DaytonaProvider
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry, State

#: `up` on the default preset (SGLang), killed -9 once the server started and the wait began.
KILLED_UP = """
import os, signal
from sandserve.providers.local import free_port
from sandserve.serve import lifecycle
from sandserve.serve.resolve import resolve_spec

class DieWhileWaiting(lifecycle.BootEvents):
    def status(self, message):
        if message.startswith("waiting for a real generation"):
            os.kill(os.getpid(), signal.SIGKILL)

lifecycle.up(resolve_spec(provider="daytona", port=free_port()), events=DieWhileWaiting())
"""


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    standin = DaytonaStandin(
        extra_env={
            **sglang_image_env(),
            "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
        },
        path_prepend=[Path(sys.executable).parent],
    )
    with standin:
        monkeypatch.setenv("DAYTONA_API_KEY", standin.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", standin.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.1)
        yield standin
        take_everything_down()


def _killed_up() -> str:
    child = subprocess.run([sys.executable, "-c", KILLED_UP], capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    (record,) = Registry().list()
    assert record.state is State.BOOTING and record.sandbox.sandbox_id
    return record.id


def test_a_killed_up_whose_sandbox_still_runs_is_settled_ready(daytona: DaytonaStandin) -> None:
    endpoint_id = _killed_up()
    registry = Registry()
    settled = lifecycle.refresh(registry.get(endpoint_id), registry)
    assert settled.state is State.READY and settled.live is True
    assert settled.sandbox.sandbox_id in daytona.sandboxes and not daytona.deleted_ids


def test_a_killed_up_whose_sandbox_stopped_is_deleted_then_settled_down(daytona: DaytonaStandin) -> None:
    endpoint_id = _killed_up()
    registry = Registry()
    sandbox_id = registry.get(endpoint_id).sandbox.sandbox_id
    daytona.set_state(sandbox_id, "stopped")  # not serving, but the sandbox still exists

    settled = lifecycle.refresh(registry.get(endpoint_id), registry)
    assert settled.state is State.DOWN and settled.live is False
    assert daytona.deleted_ids == [sandbox_id]  # nothing of it is left unseen
