"""The ledger as the version before migrations (tag layout-base) wrote it: its CREATE TABLE, verbatim, and
rows in its shape (sandbox handles with a ``data`` dict, ``Endpoint.info`` as a dict)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

OLD_SCHEMA = """
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


def old_row(
    db: sqlite3.Connection,
    endpoint_id: str,
    provider: str,
    data: dict[str, Any],
    labels: dict[str, str],
    *,
    state: str = "ready",
    endpoint: dict[str, Any] | None = None,
) -> None:
    sandbox = {"provider": provider, "sandbox_id": endpoint_id, "data": data}
    db.execute(
        "INSERT INTO endpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            endpoint_id,
            provider,
            "llamacpp",
            "tiny-random-llama",
            state,
            json.dumps(sandbox),
            json.dumps(endpoint) if endpoint else None,
            json.dumps({"labels": labels, "provider": "local"}),
            data.get("log_path"),
            None,
            1000.0,
            1001.0,
        ),
    )


def old_endpoint(endpoint_id: str, port: int, info: dict[str, Any]) -> dict[str, Any]:
    """``Endpoint.to_dict()`` as it was: ``info`` a plain dict."""
    return {
        "id": endpoint_id,
        "url": f"http://127.0.0.1:{port}",
        "model": "tiny-random-llama",
        "engine": "llamacpp",
        "provider": "local",
        "auth": "public",
        "headers": {},
        "api_key": None,
        "sandbox_id": endpoint_id,
        "expires_at": None,
        "info": info,
    }
