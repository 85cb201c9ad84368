"""The ledger: every endpoint this user has brought up, in SQLite, so nothing keeps running (or billing)
unseen.

The file holds tokens and API keys, so it is created with mode 0600 and never made readable by others. Its
schema moves by named migrations (``migrations.py``); rows are read by column name. Another process holding
the lock (a concurrent ``up``, ``down``...) makes a call wait, with ``LedgerEvents.waiting`` told after a
second, and end in ``LedgerBusyError`` only after ``BUSY_WAIT_SECONDS``: a busy ledger is never called
corrupt.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sandserve.endpoint import Endpoint
from sandserve.errors import (
    AmbiguousEndpointError,
    EndpointNotFoundError,
    LedgerBusyError,
    LedgerCorruptError,
    LedgerUnusableError,
    StateDirError,
)
from sandserve.paths import state_dir
from sandserve.providers import handle_from_record
from sandserve.providers.handles import SandboxHandle
from sandserve.serve import migrations
from sandserve.serve.migrations import FLEET_LABEL

LEDGER_FILE = "ledger.sqlite3"
#: How long a call waits for another process's lock before giving up (SQLite's own default is 5 s).
BUSY_WAIT_SECONDS = 60.0
#: When a wait is worth telling the user about.
BUSY_NOTICE_SECONDS = 1.0
#: Each attempt lets SQLite wait this long for the lock itself.
_ATTEMPT_TIMEOUT = 0.25

COLUMNS = (
    "id",
    "provider",
    "engine",
    "model",
    "state",
    "sandbox",
    "endpoint",
    "spec",
    "log_path",
    "error",
    "created_at",
    "updated_at",
    "parent_id",
    "owner_pid",
    "owner_started",
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM endpoints"

T = TypeVar("T")

__all__ = ["FLEET_LABEL", "LEDGER_FILE", "LedgerEvents", "Record", "Registry", "State"]


class State(StrEnum):
    BOOTING = "booting"
    READY = "ready"
    FAILED = "failed"
    """The boot failed; the sandbox may still exist (Daytona keeps it by default)."""
    DOWN = "down"


class LedgerEvents:
    """What the ledger tells its caller. The library never prints; the CLI overrides this."""

    def waiting(self, path: Path, seconds: float) -> None:
        """Another process has held the ledger's lock for ``seconds``; still waiting."""


#: Used by every Registry made without its own events (the CLI sets it once, at start).
default_events = LedgerEvents()


def use_events(events: LedgerEvents) -> None:
    global default_events
    default_events = events


@dataclass
class Record:
    id: str
    provider: str
    engine: str
    model: str
    state: State
    sandbox: SandboxHandle
    endpoint: Endpoint | None
    spec: dict[str, Any]
    log_path: str | None
    error: str | None
    created_at: float
    updated_at: float
    parent_id: str | None = None
    """The fleet (gateway row) this endpoint serves in, if any."""
    owner_pid: int | None = None
    """The process that ran ``up`` for it (meaningful while it boots)."""
    owner_started: str | None = None
    live: bool | None = field(default=None)
    """Whether the provider still runs it; filled in by ``status`` checks, None when not checked."""
    degraded: str | None = field(default=None)
    """Why it serves but is not whole (a fleet whose autoscaler is dead); filled in with ``live``."""

    @property
    def shown_state(self) -> str:
        """The state a user should see: a ready endpoint whose server is gone is dead, not running; a ready
        fleet whose autoscaler is dead is degraded."""
        if self.live is False and self.state in (State.READY, State.BOOTING):
            return "dead"
        if self.degraded and self.state is State.READY:
            return "degraded"
        return str(self.state)


class Registry:
    def __init__(
        self, path: Path | None = None, *, events: LedgerEvents | None = None, busy_wait: float | None = None
    ) -> None:
        self.path = path or state_dir() / LEDGER_FILE
        self.events = events
        self.busy_wait = BUSY_WAIT_SECONDS if busy_wait is None else busy_wait
        self._ensure_file()
        if self._transaction(self._needs_migrating, write=False):
            self._transaction(self._migrate)

    def _ensure_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StateDirError(self.path.parent, exc.strerror or str(exc)) from exc

    def _needs_migrating(self, db: sqlite3.Connection) -> bool:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = '_migrations'").fetchone():
            return True
        self._refuse_newer(db)
        return bool(migrations.pending(db))

    def _refuse_newer(self, db: sqlite3.Connection) -> None:
        newer = migrations.unknown(db)
        if newer:
            raise LedgerUnusableError(
                self.path,
                f"it was written by a newer sandserve (schema steps unknown here: {', '.join(newer)})",
                hint="Upgrade sandserve (pip install -U sandserve); the ledger is left as it is.",
            )

    def _migrate(self, db: sqlite3.Connection) -> None:
        self._refuse_newer(db)
        for step in migrations.pending(db):
            migrations.apply(db, step)
        db.execute("SELECT count(*) FROM endpoints").fetchone()

    @property
    def schema_version(self) -> int:
        return int(self._transaction(lambda db: db.execute("PRAGMA user_version").fetchone()[0], write=False))

    def _transaction(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``work`` in one transaction, waiting (and saying so) while another process holds the lock."""
        started = time.monotonic()
        told = False
        while True:
            db = sqlite3.connect(self.path, timeout=_ATTEMPT_TIMEOUT, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                result = work(db)
                db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                _rollback(db)
                if not _is_busy(exc):
                    raise _unusable(self.path, exc) from exc
                waited = time.monotonic() - started
                if waited >= self.busy_wait:
                    raise LedgerBusyError(self.path, waited) from exc
                if not told and waited >= BUSY_NOTICE_SECONDS:
                    (self.events or default_events).waiting(self.path, waited)
                    told = True
            except sqlite3.DatabaseError as exc:
                _rollback(db)
                raise _unusable(self.path, exc) from exc
            except BaseException:
                _rollback(db)
                raise
            finally:
                db.close()

    def run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``work`` on the ledger in one transaction (the other tables' modules use it)."""
        return self._transaction(work, write=write)

    # --- writing ----------------------------------------------------------------------------------------

    def add(
        self,
        endpoint_id: str,
        *,
        provider: str,
        engine: str,
        model: str,
        spec: dict[str, Any],
        sandbox: SandboxHandle,
        parent_id: str | None = None,
    ) -> None:
        """A new row, booting, owned by this process. A fleet worker's parent comes from its spec's label
        when not given."""
        # Here, not at the top: `ls` and `env` read the ledger without loading the local provider.
        from sandserve.providers.local import process_start_time

        now = time.time()
        parent = parent_id or (spec.get("labels") or {}).get(FLEET_LABEL)
        pid = os.getpid()
        values = {
            "id": endpoint_id,
            "provider": provider,
            "engine": engine,
            "model": model,
            "state": str(State.BOOTING),
            "sandbox": _dump(sandbox.to_record()),
            "spec": _dump(spec),
            "created_at": now,
            "updated_at": now,
            "parent_id": parent if parent != endpoint_id else None,
            "owner_pid": pid,
            "owner_started": process_start_time(pid),
        }
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self._transaction(
            lambda db: db.execute(
                f"INSERT INTO endpoints ({columns}) VALUES ({marks})", tuple(values.values())
            )
        )

    def update(
        self,
        endpoint_id: str,
        *,
        state: State | None = None,
        sandbox: SandboxHandle | None = None,
        endpoint: Endpoint | None = None,
        log_path: str | Path | None = None,
        error: str | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        changes: dict[str, Any] = {"updated_at": time.time()}
        if spec is not None:
            changes["spec"] = _dump(spec)
        if state is not None:
            changes["state"] = str(state)
        if sandbox is not None:
            changes["sandbox"] = _dump(sandbox.to_record())
        if endpoint is not None:
            changes["endpoint"] = _dump(endpoint.to_dict())
        if log_path is not None:
            changes["log_path"] = str(log_path)
        if error is not None:
            changes["error"] = error
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self._transaction(
            lambda db: db.execute(
                f"UPDATE endpoints SET {assignments} WHERE id = ?", (*changes.values(), endpoint_id)
            )
        )

    # --- reading ----------------------------------------------------------------------------------------

    def get(self, endpoint_id: str) -> Record:
        row = self._transaction(
            lambda db: db.execute(f"{_SELECT} WHERE id = ?", (endpoint_id,)).fetchone(), write=False
        )
        if row is None:
            raise EndpointNotFoundError(endpoint_id)
        return self._carried(_record(row))

    def list(self, *, include_down: bool = False) -> list[Record]:
        return self._select("" if include_down else "WHERE state != ?", () if include_down else (State.DOWN,))

    def find_by_url(self, url: str) -> Record | None:
        """The newest endpoint that is not down served at ``url`` (None: none this ledger knows)."""
        matches = [record for record in self.list() if record.endpoint and record.endpoint.url == url]
        return matches[-1] if matches else None

    def members_of(self, parent_id: str, *, include_down: bool = False) -> builtins.list[Record]:
        """The rows that belong to ``parent_id`` (a fleet's workers, booting ones included)."""
        if include_down:
            return self._select("WHERE parent_id = ?", (parent_id,))
        return self._select("WHERE parent_id = ? AND state != ?", (parent_id, State.DOWN))

    def _select(self, where: str, parameters: tuple[Any, ...]) -> builtins.list[Record]:
        query = f"{_SELECT} {where} ORDER BY created_at"
        rows = self._transaction(lambda db: db.execute(query, parameters).fetchall(), write=False)
        return [self._carried(_record(row)) for row in rows]

    def _carried(self, record: Record) -> Record:
        """The record, its endpoint carrying this ledger (its ``down()`` then looks here)."""
        if record.endpoint is not None:
            record.endpoint.ledger = self
        return record

    def resolve(self, ref: str | None) -> Record:
        """The record ``ref`` names (an id or a unique id prefix), or the only endpoint up when ref is
        None."""
        records = self.list()
        if ref is None:
            # A fleet's workers and autoscaler serve the fleet: its gateway row is the one to choose.
            chosen = [r for r in records if r.parent_id is None] or records
            ready = [r for r in chosen if r.state is State.READY] or chosen
            if not ready:
                raise EndpointNotFoundError(None)
            if len(ready) > 1:
                raise AmbiguousEndpointError([r.id for r in ready])
            return ready[0]
        matches = [r for r in self.list(include_down=True) if r.id == ref] or [
            r for r in records if r.id.startswith(ref)
        ]
        if not matches:
            raise EndpointNotFoundError(ref)
        if len(matches) > 1:
            raise AmbiguousEndpointError([r.id for r in matches])
        return matches[0]


def ledger_of(endpoint: Endpoint) -> Registry:
    """The ledger ``endpoint`` came from, else the user's own."""
    return endpoint.ledger if isinstance(endpoint.ledger, Registry) else Registry()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(exc) or "busy" in str(exc)


#: SQLite's codes for a file whose content is not a (whole) database: only these make a ledger corrupt.
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def _unusable(path: Path, exc: sqlite3.DatabaseError) -> LedgerCorruptError | LedgerUnusableError:
    """Corrupt only when SQLite says the content is; a full disk or a read-only file is something else."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name in _CORRUPT or name.startswith("SQLITE_CORRUPT") or "malformed" in str(exc):
        return LedgerCorruptError(path, str(exc))
    if not name and not isinstance(exc, sqlite3.OperationalError):
        return LedgerCorruptError(path, str(exc))
    return LedgerUnusableError(path, str(exc))


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _record(row: tuple[Any, ...]) -> Record:
    values = dict(zip(COLUMNS, row, strict=True))
    endpoint = values.pop("endpoint")
    return Record(
        **{
            **values,
            "state": State(values["state"]),
            "sandbox": handle_from_record(json.loads(values["sandbox"])),
            "endpoint": Endpoint.from_dict(json.loads(endpoint)) if endpoint else None,
            "spec": json.loads(values["spec"]),
        }
    )
