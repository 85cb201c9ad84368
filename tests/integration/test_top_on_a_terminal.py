"""`sandserve top` in a real terminal (tmux, 80x24) while a fleet's autoscaler adds a worker: the worker
appears on the screen without restarting top, the autoscaler has its own line with its last decision, every
line fits, and `q` quits."""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sandserve_command
from polling import poll_until
from test_fleet_autoscale import member_ids, scaled_fleet, sustained_load

pytestmark = [
    pytest.mark.usefixtures("llama_server", "tiny_model"),
    pytest.mark.skipif(not subprocess.run(["which", "tmux"], capture_output=True).stdout, reason="no tmux"),
]


class Tmux:
    """One tmux server of its own (its own socket), so no user's session is touched."""

    def __init__(self) -> None:
        self.socket = f"sandserve-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "top").splitlines()

    def pane(self, field: str) -> str:
        return self("display-message", "-p", "-t", "top", f"#{{{field}}}").strip()


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        subprocess.run(["tmux", "-L", server.socket, "kill-server"], capture_output=True)


def test_top_shows_the_worker_the_autoscaler_adds_and_quits_on_q(tmux: Tmux, tmp_path: Path) -> None:
    fleet = scaled_fleet(1, 2, model="smollm2-135m")
    [first] = member_ids(fleet)
    env = {key: value for key, value in os.environ.items() if key.startswith(("SANDSERVE_", "HF_", "PATH"))}
    # top's exit status goes to a file: tmux 3.3 leaves #{pane_dead_status} empty for a command started
    # through `env`.
    exit_file = tmp_path / "exit-status"
    command = " ".join(
        ["env", *(shlex.quote(f"{k}={v}") for k, v in env.items()), "TERM=xterm-256color"]
        + [shlex.quote(part) for part in sandserve_command()]
        + ["top", "--interval", "0.5", ";", "echo", "$?", ">", shlex.quote(str(exit_file))]
    )
    tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", command)
    tmux("set-option", "-t", "top", "remain-on-exit", "on")
    poll_until(lambda: any(first in line for line in tmux.screen()), what="top to draw the fleet")

    with sustained_load(fleet):
        poll_until(lambda: len(member_ids(fleet)) == 2, what="the autoscaler to add a worker")
        [added] = [worker for worker in member_ids(fleet) if worker != first]
        poll_until(
            lambda: any(added in line for line in tmux.screen()), what="the new worker on top's screen"
        )
        # Its last decision: "up" until its next state write says the worker joined (which may come first
        # on a loaded machine, where top draws less often than the autoscaler writes).
        decisions = ("autoscaler: up", f"autoscaler: joined {added}")
        poll_until(
            lambda: any(decision in line for line in tmux.screen() for decision in decisions),
            what="the autoscaler's decision on its own line",
        )
        screen = tmux.screen()
    print("\n".join(screen))  # what a person saw (pytest -s shows it)
    assert screen[0].startswith("sandserve top") and "1 fleet (2 workers)" in screen[0]
    assert all(len(line) <= 80 for line in screen)
    rows = {worker: next(line for line in screen if worker in line) for worker in (first, added)}
    assert all(f" {worker} " in f"{line} " for worker, line in rows.items())  # whole ids
    assert not any(line.lstrip("├└ ").startswith("scaler-") and "worker" in line for line in screen)

    tmux("send-keys", "-t", "top", "q")
    poll_until(exit_file.exists, what="top to quit on q")
    poll_until(lambda: exit_file.read_text().strip(), what="top's exit status")
    assert exit_file.read_text().strip() == "0"
