"""The ledger in SQLite: migrations from the schema before them, named columns, the fleet relation, a busy
lock that waits (and says so) instead of being called corrupt, rows left booting by a killed `up` settled."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from old_ledger import OLD_SCHEMA, old_endpoint, old_row

from sandserve.endpoint import Endpoint
from sandserve.errors import LedgerBusyError, LedgerCorruptError, LedgerUnusableError
from sandserve.providers.handles import GatewayHandle, LocalHandle, Member, SandboxHandle
from sandserve.serve import ledger, lifecycle, migrations
from sandserve.serve.ledger import FLEET_LABEL, LedgerEvents, Registry, State


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    """A ledger from before migrations: a fleet's gateway, two workers, one plain endpoint."""
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(OLD_SCHEMA)
        old_row(
            db,
            "fleet-1",
            "gateway",
            {
                "port": 3000,
                "log_path": "/tmp/g.log",
                "pid": 11,
                "start_time": "5",
                "policy": "cache_aware",
                "members": [{"endpoint_id": "w-1", "worker_id": "a", "url": "http://127.0.0.1:1"}],
            },
            {},
        )
        for worker in ("w-1", "w-2"):
            old_row(
                db, worker, "local", {"port": 4000, "pid": 12, "start_time": "6"}, {FLEET_LABEL: "fleet-1"}
            )
        old_row(
            db,
            "solo",
            "local",
            {"port": 5000, "log_path": "/tmp/s.log", "pid": 13, "start_time": "7"},
            {},
            endpoint=old_endpoint(
                "solo",
                5000,
                {
                    "kv_pool_tokens": 32768,
                    "preset": "tiny",
                    "policy": "kept",
                    "boot_timeline": [{"phase": "listening", "seconds": 0.4}],
                    "capabilities": {"regex": True, "ebnf": True, "native_generate": False},
                },
            ),
        )
    return path


def test_an_old_ledger_is_migrated_and_reads_as_before(old_ledger: Path) -> None:
    registry = Registry(old_ledger)

    assert registry.schema_version == len(migrations.MIGRATIONS)
    with sqlite3.connect(old_ledger) as db:
        applied = [name for (name,) in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
        columns = [row[1] for row in db.execute("PRAGMA table_info(endpoints)")]
    assert applied == [step.__name__ for step in migrations.MIGRATIONS]
    assert {"parent_id", "owner_pid", "owner_started"} <= set(columns)

    assert [r.id for r in registry.members_of("fleet-1")] == ["w-1", "w-2"]
    assert registry.members_of("solo") == []
    gateway = registry.get("fleet-1").sandbox
    assert isinstance(gateway, GatewayHandle)
    assert (gateway.port, gateway.pid, gateway.policy, gateway.log_path) == (
        3000,
        11,
        "cache_aware",
        "/tmp/g.log",
    )
    assert gateway.members == [Member(endpoint_id="w-1", worker_id="a", url="http://127.0.0.1:1")]
    worker = registry.get("w-1").sandbox
    assert isinstance(worker, LocalHandle) and (worker.port, worker.start_time) == (4000, "6")

    solo = registry.get("solo")
    assert solo.endpoint is not None
    info = solo.endpoint.info
    assert (info.kv_pool_tokens, info.preset, info.extra) == (32768, "tiny", {"policy": "kept"})
    assert info.boot_timeline[0].phase == "listening" and info.capabilities is not None
    assert solo.endpoint.capabilities().regex and not solo.endpoint.capabilities().native_generate


def test_migrating_twice_changes_nothing(old_ledger: Path) -> None:
    Registry(old_ledger)
    before = old_ledger.read_bytes()
    again = Registry(old_ledger)
    assert again.schema_version == len(migrations.MIGRATIONS)
    assert old_ledger.read_bytes() == before


def test_a_ledger_from_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Registry(path)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_from_the_future', 0)")
    before = path.read_bytes()
    with pytest.raises(LedgerUnusableError, match="m999_from_the_future"):
        Registry(path)
    assert path.read_bytes() == before


def test_garbage_is_corrupt_not_busy(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"not sqlite" * 200)
    with pytest.raises(LedgerCorruptError):
        Registry(path)


def test_rows_are_read_by_column_name_whatever_the_column_order(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    registry = Registry(path)
    registry.add(
        "e-1",
        provider="local",
        engine="llamacpp",
        model="m",
        spec={},
        sandbox=LocalHandle("local", "e-1", port=7),
    )
    with sqlite3.connect(path) as db:  # a column a later version might add, before the others in SELECT *
        db.execute("ALTER TABLE endpoints ADD COLUMN zzz_later TEXT DEFAULT 'x'")
    record = registry.get("e-1")
    assert (record.provider, record.state, record.sandbox.port) == ("local", State.BOOTING, 7)  # type: ignore[attr-defined]


def test_members_follow_the_parent_relation(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "ledger.sqlite3")
    handle = SandboxHandle("gateway", "")
    registry.add("fleet-a", provider="gateway", engine="llamacpp", model="m", spec={}, sandbox=handle)
    labelled = {"labels": {FLEET_LABEL: "fleet-a"}}
    registry.add("w-1", provider="local", engine="llamacpp", model="m", spec=labelled, sandbox=handle)
    registry.add(
        "w-2", provider="local", engine="llamacpp", model="m", spec={}, sandbox=handle, parent_id="fleet-a"
    )
    registry.add("other", provider="local", engine="llamacpp", model="m", spec={}, sandbox=handle)
    registry.update("w-2", state=State.DOWN)
    assert [r.id for r in registry.members_of("fleet-a")] == ["w-1"]
    assert [r.id for r in registry.members_of("fleet-a", include_down=True)] == ["w-1", "w-2"]
    assert registry.get("w-1").parent_id == "fleet-a" and registry.get("other").parent_id is None


class Recorded(LedgerEvents):
    def __init__(self) -> None:
        self.waits: list[float] = []
        self.told = threading.Event()

    def waiting(self, path: Path, seconds: float) -> None:
        self.waits.append(seconds)
        self.told.set()


@contextlib.contextmanager
def lock_held(path: Path, release: threading.Event) -> Iterator[None]:
    """Another connection holds the ledger's lock from entry until ``release`` is set (or the block ends)."""
    locked = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(60)
        db.execute("COMMIT")
        db.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait()
    try:
        yield
    finally:
        release.set()
        holder.join()


def test_a_busy_ledger_waits_says_so_and_then_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is let go once the wait has been told: the call then goes through, however long that took."""
    monkeypatch.setattr(ledger, "BUSY_NOTICE_SECONDS", 0.05)
    monkeypatch.setattr(ledger, "_ATTEMPT_TIMEOUT", 0.01)
    path = tmp_path / "ledger.sqlite3"
    Registry(path).add(
        "e-1", provider="local", engine="llamacpp", model="m", spec={}, sandbox=SandboxHandle("local", "e-1")
    )
    events = Recorded()
    with lock_held(path, release=events.told):
        records = Registry(path, events=events).list()
    assert [r.id for r in records] == ["e-1"]
    assert len(events.waits) == 1 and events.waits[0] >= 0.05


def test_a_lock_held_past_the_wait_is_busy_not_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "_ATTEMPT_TIMEOUT", 0.01)
    path = tmp_path / "ledger.sqlite3"
    Registry(path)
    with lock_held(path, release=threading.Event()), pytest.raises(LedgerBusyError, match="busy") as caught:
        Registry(path, busy_wait=0.05).update("x", state=State.DOWN)
    assert not isinstance(caught.value, LedgerCorruptError)
    assert "Nothing was changed" in caught.value.message


def test_a_row_left_booting_by_a_dead_up_with_its_server_gone_is_settled_down(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "ledger.sqlite3")
    handle = LocalHandle("local", "e-1", port=9, pid=None)
    registry.add("e-1", provider="local", engine="llamacpp", model="m", spec={}, sandbox=handle)
    assert lifecycle.reconcile(registry.get("e-1"), registry).state is State.BOOTING  # its `up` (us) runs

    _orphan(registry, "e-1")
    settled = lifecycle.refresh(registry.get("e-1"), registry)
    assert settled.state is State.DOWN and "ended before the server was ready" in (settled.error or "")
    assert settled.live is False


def _orphan(registry: Registry, endpoint_id: str) -> None:
    """Make the row look as if the process that ran its `up` had been killed (a pid that is not running)."""
    with sqlite3.connect(registry.path) as db:
        db.execute(
            "UPDATE endpoints SET owner_pid = ?, owner_started = 'gone' WHERE id = ?",
            (2**22 + 1, endpoint_id),
        )


def test_endpoint_json_keeps_server_info_as_a_dict(tmp_path: Path) -> None:
    endpoint = Endpoint("e", "http://x", "m", info={"kv_pool_tokens": 5, "policy": "p"})
    registry = Registry(tmp_path / "ledger.sqlite3")
    registry.add(
        "e", provider="local", engine="llamacpp", model="m", spec={}, sandbox=SandboxHandle("local", "e")
    )
    registry.update("e", endpoint=endpoint, state=State.READY)
    stored = registry.get("e").endpoint
    assert stored is not None and stored.info == endpoint.info and stored.info["policy"] == "p"


def _sqlite_error(cls: type[sqlite3.DatabaseError], text: str, name: str | None) -> sqlite3.DatabaseError:
    error = cls(text)
    error.sqlite_errorname = name  # type: ignore[attr-defined] - set by SQLite itself on real errors
    return error


@pytest.mark.parametrize(
    ("error", "corrupt"),
    [
        (_sqlite_error(sqlite3.DatabaseError, "file is not a database", "SQLITE_NOTADB"), True),
        (_sqlite_error(sqlite3.DatabaseError, "database disk image is malformed", "SQLITE_CORRUPT"), True),
        (_sqlite_error(sqlite3.OperationalError, "database or disk is full", "SQLITE_FULL"), False),
        (
            _sqlite_error(
                sqlite3.OperationalError, "attempt to write a readonly database", "SQLITE_READONLY"
            ),
            False,
        ),
        (_sqlite_error(sqlite3.OperationalError, "disk I/O error", "SQLITE_IOERR"), False),
    ],
)
def test_only_a_broken_file_is_called_corrupt(error: sqlite3.DatabaseError, corrupt: bool) -> None:
    from sandserve.errors import LedgerUnusableError
    from sandserve.serve.ledger import _unusable

    found = _unusable(Path("/state/ledger.sqlite3"), error)
    assert isinstance(found, LedgerCorruptError if corrupt else LedgerUnusableError)
    if not corrupt:
        assert "Move it aside" not in str(found) and "Nothing was changed" in str(found)


def test_old_token_endpoints_learn_which_header_holds_their_token(tmp_path: Path) -> None:
    """Rows written when endpoint.py fixed the header names get them from their provider."""
    from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER, SKIP_ACTIVITY_HEADER

    path = tmp_path / "ledger.sqlite3"
    skip_warning = {"X-Daytona-Skip-Preview-Warning": "true"}
    with sqlite3.connect(path) as db:
        db.execute(OLD_SCHEMA)
        rows = {
            "local-token": ("local", {PREVIEW_TOKEN_HEADER: "tok-local"}, "token"),
            "daytona-token": ("daytona", {PREVIEW_TOKEN_HEADER: "tok-remote", **skip_warning}, "token"),
            "daytona-key": ("daytona", dict(skip_warning), "key"),
        }
        for endpoint_id, (provider, headers, auth) in rows.items():
            endpoint = {**old_endpoint(endpoint_id, 5000, {}), "provider": provider, "auth": auth}
            old_row(db, endpoint_id, provider, {"port": 5000}, {}, endpoint={**endpoint, "headers": headers})

    registry = Registry(path)
    endpoints = {endpoint_id: registry.get(endpoint_id).endpoint for endpoint_id in rows}
    local, remote, keyed = endpoints["local-token"], endpoints["daytona-token"], endpoints["daytona-key"]
    assert local is not None and remote is not None and keyed is not None
    assert (local.token_header, local.token) == (PREVIEW_TOKEN_HEADER, "tok-local")
    assert (remote.token_header, remote.token) == (PREVIEW_TOKEN_HEADER, "tok-remote")
    assert (keyed.token_header, keyed.token) == (None, "")
    assert "export TOKEN=tok-remote" in remote.export_lines()
    assert remote.probe_request_headers()[SKIP_ACTIVITY_HEADER] == "true"
    assert remote.probe_request_headers()["X-Daytona-Skip-Preview-Warning"] == "true"
    assert local.probe_headers.get(SKIP_ACTIVITY_HEADER) == "true"  # the local provider emulates Daytona
    # What the migration wrote round-trips: the next read changes nothing.
    before = path.read_bytes()
    assert Registry(path).get("daytona-token").endpoint == remote
    assert path.read_bytes() == before
