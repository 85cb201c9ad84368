"""The ledger under a real engine and real processes: a lock held by another process, an `up` killed while
booting, a ledger write failing after the engine started, and the Endpoint as the handle on what it serves."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_cli
from old_ledger import OLD_SCHEMA, old_endpoint, old_row
from polling import poll_while

import sandserve
from sandserve.endpoint import Endpoint
from sandserve.errors import EndpointNotFoundError, LedgerBusyError
from sandserve.providers.local import port_is_free, process_start_time
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry, State
from sandserve.serve.resolve import resolve_spec

# Longer than SQLite's own 5 s busy timeout, which a ledger that gave up at the first wait would show.
LOCK_SECONDS = 8


def test_ls_waits_for_a_ledger_another_process_locked_and_never_calls_it_corrupt(isolated: Path) -> None:
    Registry()  # the file exists, migrated
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sqlite3, sys, time
                db = sqlite3.connect({str(isolated / "ledger.sqlite3")!r}, isolation_level=None)
                db.execute("BEGIN EXCLUSIVE")
                print("locked", flush=True)
                time.sleep({LOCK_SECONDS})
                db.execute("COMMIT")
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = run_cli("ls", timeout=LOCK_SECONDS + 60)
        waited = time.monotonic() - started
    finally:
        holder.communicate(timeout=LOCK_SECONDS + 10)  # waited for, and its pipe closed
    assert result.returncode == 0, result.stderr
    assert "waiting" in result.stderr and "holds its lock" in result.stderr
    assert "cannot be read" not in result.stderr and "corrupt" not in result.stderr.lower()
    assert "no endpoints" in result.stdout + result.stderr
    assert waited >= LOCK_SECONDS - 2  # it waited for the lock rather than failing early


KILLED_UP = """
import os, signal, sys
from sandserve.serve import lifecycle
from sandserve.serve.resolve import resolve_spec

class DieWhileWaiting(lifecycle.BootEvents):
    def status(self, message):
        if message.startswith("waiting for a real generation"):
            os.kill(os.getpid(), signal.SIGKILL)

lifecycle.up(resolve_spec("tiny", provider="local"), events=DieWhileWaiting())
"""


def _kill_up_while_booting() -> str:
    """Run `up` in a child that is killed -9 once its server started; the booting row's id."""
    child = subprocess.run([sys.executable, "-c", KILLED_UP], capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    (record,) = Registry().list()
    assert record.state is State.BOOTING and record.endpoint is not None
    return record.id


def test_a_row_left_booting_by_a_killed_up_becomes_ready_when_its_server_runs(
    llama_server: Path, tiny_model: Path
) -> None:
    endpoint_id = _kill_up_while_booting()
    registry = Registry()
    record = lifecycle.refresh(registry.get(endpoint_id), registry)
    assert record.state is State.READY and record.live is True
    assert "interrupted" in (record.error or "")
    listed = run_cli("ls")
    assert listed.returncode == 0 and "ready" in listed.stdout

    sandserve.down(endpoint_id)
    assert Registry().get(endpoint_id).state is State.DOWN
    assert process_start_time(record.sandbox.pid) is None  # type: ignore[attr-defined]


def test_a_row_left_booting_whose_server_is_gone_becomes_down(llama_server: Path, tiny_model: Path) -> None:
    endpoint_id = _kill_up_while_booting()
    registry = Registry()
    handle = registry.get(endpoint_id).sandbox
    os.killpg(handle.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    poll_while(lambda: process_start_time(handle.pid), what="the killed server gone")  # type: ignore[attr-defined]

    result = run_cli("ls", "--all", "--json")
    assert result.returncode == 0, result.stderr
    assert Registry().get(endpoint_id).state is State.DOWN


class FailingLedger(Registry):
    """A ledger whose first write of one kind fails after the server started: it turned busy (another process
    held it for over a minute) or the disk under it failed."""

    def __init__(self, when: str, error: BaseException) -> None:
        super().__init__()
        self.when, self.error, self.failed = when, error, False

    def update(self, endpoint_id: str, **changes: object) -> None:
        if self.when == "started":
            hit = changes.get("endpoint") is not None
        else:
            hit = changes.get("state") is State.READY
        if hit and not self.failed:
            self.failed = True
            raise self.error
        super().update(endpoint_id, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("when", "error", "recorded"),
    [
        ("started", LedgerBusyError(Path("ledger"), 60), None),
        ("ready", LedgerBusyError(Path("ledger"), 60), None),
        ("ready", OSError(28, "No space left on device"), "No space left"),
    ],
    ids=["busy-after-start", "busy-when-ready", "disk-full-when-ready"],
)
def test_a_ledger_failure_after_the_engine_started_stops_the_engine(
    llama_server: Path, tiny_model: Path, when: str, error: BaseException, recorded: str | None
) -> None:
    with pytest.raises(type(error)):
        lifecycle.up(resolve_spec("tiny", provider="local"), registry=FailingLedger(when, error))
    (record,) = Registry().list(include_down=True)
    if recorded:
        assert record.state is State.DOWN and recorded in (record.error or "")
    else:  # not recorded (the ledger was busy): left booting, owned by this live process, for reconcile
        assert record.state is State.BOOTING and record.owner_pid == os.getpid()
    # The port recorded at create says which server it was (the failed write may have carried its pid).
    port = record.sandbox.port  # type: ignore[attr-defined]
    assert port is not None and port_is_free(port)
    assert not _processes_with(f"--port {port} "), "the engine was left running"


def _processes_with(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args and process_start_time(int(cmdline.parent.name)) is not None:
            found.append(int(cmdline.parent.name))
    return found


def test_the_endpoint_is_the_handle_on_what_it_serves(local_endpoint: Endpoint) -> None:
    status = local_endpoint.status()
    assert (status.id, status.state, status.live, status.ready) == (local_endpoint.id, "ready", True, True)
    assert "llama_server" in local_endpoint.logs() or "main: server is listening" in local_endpoint.logs()

    local_endpoint.down()
    after = local_endpoint.status()
    assert (after.state, after.live, after.ready) == ("down", False, False)
    assert Registry().get(local_endpoint.id).state is State.DOWN


def test_an_endpoint_from_the_environment_has_no_ledger_handle() -> None:
    endpoint = Endpoint.from_env({"ENDPOINT": "http://127.0.0.1:9/v1"})
    assert endpoint is not None
    with pytest.raises(EndpointNotFoundError):
        endpoint.status()


def test_sandserve_reads_a_ledger_written_before_migrations(isolated: Path) -> None:
    """A user's existing ledger: migrated on first use; a row whose server is gone shows as dead."""
    isolated.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(isolated / "ledger.sqlite3") as db:
        db.execute(OLD_SCHEMA)
        gone = {"port": 9, "pid": 2**22 + 1, "start_time": "1"}  # a pid above pid_max: never running
        old_row(db, "old-1", "local", gone, {}, endpoint=old_endpoint("old-1", 9, {"kv_pool_tokens": 64}))
    listed = run_cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["state"], row["info"]["kv_pool_tokens"]) == ("old-1", "dead", 64)
    assert run_cli("down", "old-1").returncode == 0
    assert Registry().get("old-1").state is State.DOWN


def test_a_fleet_is_one_handle_too(llama_server: Path, tiny_model: Path) -> None:
    from sandserve.fleet import fleet_up

    fleet = fleet_up(resolve_spec("tiny", provider="local"), 1, "round_robin")
    (worker,) = Registry().members_of(fleet.id)
    assert (fleet.status().state, fleet.status().live) == ("ready", True)
    assert fleet.logs()  # the gateway's own log

    fleet.down()
    assert (fleet.status().state, fleet.status().live) == ("down", False)
    assert Registry().get(worker.id).state is State.DOWN  # its worker went with it


def test_a_handle_carries_the_ledger_it_came_from(llama_server: Path, tmp_path: Path) -> None:
    from sandserve.fleet import fleet_up

    own = Registry(tmp_path / "own-ledger.sqlite3")
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local"), registry=own)
    fleet = fleet_up(resolve_spec("tiny", provider="local"), 1, "round_robin", registry=own)
    assert Registry().list(include_down=True) == []  # nothing in the user's own ledger
    assert endpoint.status().state == "ready" and endpoint.logs()

    endpoint.down()
    fleet.down()
    assert own.get(endpoint.id).state is State.DOWN
    assert own.get(fleet.id).state is State.DOWN
    assert all(worker.state is State.DOWN for worker in own.members_of(fleet.id, include_down=True))
    # A handle read back from that ledger carries it too.
    (again,) = [r.endpoint for r in own.list(include_down=True) if r.id == endpoint.id]
    assert again is not None and again.status().state == "down"
