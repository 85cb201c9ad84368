"""The ledger: every endpoint this user has brought up, in SQLite, so nothing keeps running (or billing) unseen.

The file holds tokens and API keys, so it is created with mode 0600 and never made readable by others.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sandserve.endpoint import Endpoint
from sandserve.errors import AmbiguousEndpointError, EndpointNotFoundError, LedgerCorruptError, StateDirError
from sandserve.paths import state_dir
from sandserve.providers.base import SandboxHandle

LEDGER_FILE = "ledger.sqlite3"
#: The label that ties a fleet's worker to its gateway's row (the worker's spec carries it).
FLEET_LABEL = "sandserve.fleet"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    engine      TEXT NOT NULL,
    model       TEXT NOT NULL,
    state       TEXT NOT NULL,
    sandbox     TEXT NOT NULL,
    endpoint    TEXT,
    spec        TEXT NOT NULL,
    log_path    TEXT,
    error       TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
)
"""


class State(StrEnum):
    BOOTING = "booting"
    READY = "ready"
    FAILED = "failed"
    """The boot failed; the sandbox may still exist (Daytona keeps it by default)."""
    DOWN = "down"


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
    live: bool | None = field(default=None)
    """Whether the provider still runs it; filled in by ``status`` checks, None when not checked."""

    @property
    def shown_state(self) -> str:
        """The state a user should see: a ready endpoint whose server is gone is dead, not running."""
        if self.live is False and self.state in (State.READY, State.BOOTING):
            return "dead"
        return str(self.state)


class Registry:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / LEDGER_FILE
        self._ensure_file()
        try:
            with self._connect() as db:
                db.execute(_SCHEMA)
                db.execute("SELECT count(*) FROM endpoints").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LedgerCorruptError(self.path, str(exc)) from exc

    def _ensure_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StateDirError(self.path.parent, exc.strerror or str(exc)) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise LedgerCorruptError(self.path, str(exc)) from exc
        finally:
            db.close()

    def add(
        self,
        endpoint_id: str,
        *,
        provider: str,
        engine: str,
        model: str,
        spec: dict[str, Any],
        sandbox: SandboxHandle,
    ) -> None:
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO endpoints (id, provider, engine, model, state, sandbox, spec, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    endpoint_id,
                    provider,
                    engine,
                    model,
                    State.BOOTING,
                    _dump(sandbox.__dict__),
                    _dump(spec),
                    now,
                    now,
                ),
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
    ) -> None:
        changes: dict[str, Any] = {"updated_at": time.time()}
        if state is not None:
            changes["state"] = str(state)
        if sandbox is not None:
            changes["sandbox"] = _dump(sandbox.__dict__)
        if endpoint is not None:
            changes["endpoint"] = _dump(endpoint.to_dict())
        if log_path is not None:
            changes["log_path"] = str(log_path)
        if error is not None:
            changes["error"] = error
        assignments = ", ".join(f"{column} = ?" for column in changes)
        with self._connect() as db:
            db.execute(f"UPDATE endpoints SET {assignments} WHERE id = ?", (*changes.values(), endpoint_id))

    def get(self, endpoint_id: str) -> Record:
        with self._connect() as db:
            row = db.execute("SELECT * FROM endpoints WHERE id = ?", (endpoint_id,)).fetchone()
        if row is None:
            raise EndpointNotFoundError(endpoint_id)
        return _record(row)

    def list(self, *, include_down: bool = False) -> list[Record]:
        query = "SELECT * FROM endpoints"
        if not include_down:
            query += f" WHERE state != '{State.DOWN}'"
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_at").fetchall()
        return [_record(row) for row in rows]

    def members_of(self, parent_id: str, *, include_down: bool = False) -> builtins.list[Record]:
        """The rows that belong to ``parent_id`` (a fleet's workers, booting ones included)."""
        return [
            record
            for record in self.list(include_down=include_down)
            if record.id != parent_id and record.spec.get("labels", {}).get(FLEET_LABEL) == parent_id
        ]

    def resolve(self, ref: str | None) -> Record:
        """The record ``ref`` names (an id or a unique id prefix), or the only endpoint up when ref is None."""
        records = self.list()
        if ref is None:
            ready = [r for r in records if r.state is State.READY] or records
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


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _record(row: tuple[Any, ...]) -> Record:
    (id_, provider, engine, model, state, sandbox, endpoint, spec, log_path, error, created, updated) = row
    return Record(
        id=id_,
        provider=provider,
        engine=engine,
        model=model,
        state=State(state),
        sandbox=SandboxHandle(**json.loads(sandbox)),
        endpoint=Endpoint.from_dict(json.loads(endpoint)) if endpoint else None,
        spec=json.loads(spec),
        log_path=log_path,
        error=error,
        created_at=created,
        updated_at=updated,
    )
