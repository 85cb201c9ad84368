"""The ledger's schema, as an append-only list of named migrations (the way simonw/llm keeps its log
database).

Each migration runs once, in order, inside the transaction that records it in ``_migrations``; the schema
version (``PRAGMA user_version``) is the number applied. Never edit or reorder a migration that has shipped:
append a new one. A ledger that names a migration this version does not know was written by a newer sandserve.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = []
migration = MIGRATIONS.append

#: The label that ties a fleet's worker to its gateway's row (the worker's spec carries it).
FLEET_LABEL = "sandserve.fleet"


def applied(db: sqlite3.Connection) -> list[str]:
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    return [name for (name,) in db.execute("SELECT name FROM _migrations ORDER BY rowid")]


def pending(db: sqlite3.Connection) -> list[Migration]:
    done = set(applied(db))
    return [step for step in MIGRATIONS if step.__name__ not in done]


def unknown(db: sqlite3.Connection) -> list[str]:
    """Migrations the ledger has that this version does not know (a newer sandserve wrote it)."""
    known = {step.__name__ for step in MIGRATIONS}
    return [name for name in applied(db) if name not in known]


def apply(db: sqlite3.Connection, step: Migration) -> None:
    step(db)
    db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (step.__name__, time.time()))
    count = db.execute("SELECT count(*) FROM _migrations").fetchone()[0]
    db.execute(f"PRAGMA user_version = {int(count)}")


@migration
def m001_endpoints(db: sqlite3.Connection) -> None:
    # The table as it was before migrations existed: an existing ledger already has it.
    db.execute(
        """
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
    )


@migration
def m002_fleet_members(db: sqlite3.Connection) -> None:
    """A fleet's workers point at their gateway's row, instead of being found by a label inside the spec."""
    db.execute("ALTER TABLE endpoints ADD COLUMN parent_id TEXT REFERENCES endpoints(id)")
    db.execute("CREATE INDEX endpoints_parent ON endpoints (parent_id)")
    for endpoint_id, spec in db.execute("SELECT id, spec FROM endpoints").fetchall():
        parent = _labels(spec).get(FLEET_LABEL)
        if parent and parent != endpoint_id:
            db.execute("UPDATE endpoints SET parent_id = ? WHERE id = ?", (parent, endpoint_id))


@migration
def m003_typed_sandbox_handles(db: sqlite3.Connection) -> None:
    """Sandbox handles are stored flat (``{"provider", "sandbox_id", "port", ...}``), not under ``data``."""
    for endpoint_id, sandbox in db.execute("SELECT id, sandbox FROM endpoints").fetchall():
        handle = json.loads(sandbox)
        data = handle.pop("data", None)
        if isinstance(data, dict):
            flat = {**data, **handle}
            db.execute(
                "UPDATE endpoints SET sandbox = ? WHERE id = ?",
                (json.dumps(flat, sort_keys=True), endpoint_id),
            )


@migration
def m004_boot_owner(db: sqlite3.Connection) -> None:
    """The process running ``up`` for a booting row, so a row whose ``up`` was killed can be reconciled."""
    db.execute("ALTER TABLE endpoints ADD COLUMN owner_pid INTEGER")
    db.execute("ALTER TABLE endpoints ADD COLUMN owner_started TEXT")


#: Where m005 moves each flat spec field: the resources, the provider's settings, the engine's settings.
_SPEC_PARTS = {
    "resources": {"gpus": "gpu_types", "spot": "spot", "image": "image"},
    "provider_settings": {
        name: name
        for name in (
            "target",
            "ttl_minutes",
            "auto_stop_minutes",
            "create_timeout",
            "signed_url_ttl",
            "cache_volume",
            "hf_token_secret",
        )
    },
    "engine_settings": {name: name for name in ("reasoning_parser", "tool_call_parser", "extra_args", "env")},
}
#: The one image sandserve chose before images followed the GPU's vendor: a spec that had it chose nothing.
_THE_ONLY_IMAGE_BEFORE_M005 = "lmsysorg/sglang:v0.5.12.post1-cu130"


@migration
def m005_typed_spec(db: sqlite3.Connection) -> None:
    """The spec is stored in its parts (``resources``, ``provider_settings``, ``engine_settings``) instead of
    one flat bag of fields; one GPU, as every sandbox had before ``--gpus``."""
    for endpoint_id, spec_json in db.execute("SELECT id, spec FROM endpoints").fetchall():
        try:
            spec = json.loads(spec_json)
        except ValueError:
            continue
        if not isinstance(spec, dict) or "resources" in spec or "served_name" not in spec:
            continue  # already shaped, or not a served model's spec (a fleet's gateway row)
        for part, fields in _SPEC_PARTS.items():
            spec[part] = {new: spec.pop(old) for old, new in fields.items() if old in spec}
        resources = spec["resources"]
        resources["gpu_count"] = 1
        if resources.get("image") == _THE_ONLY_IMAGE_BEFORE_M005:
            resources["image"] = None
        shaped = json.dumps(spec, sort_keys=True)
        db.execute("UPDATE endpoints SET spec = ? WHERE id = ?", (shaped, endpoint_id))


@migration
def m006_boots_and_snapshots(db: sqlite3.Connection) -> None:
    """Boot receipts (each boot's steps, warm or cold, by the key of its spec) and the golden snapshots
    this user captured (which spec each belongs to)."""
    db.execute(
        """
        CREATE TABLE boots (
            endpoint_id TEXT NOT NULL,
            spec_key    TEXT NOT NULL,
            origin      TEXT NOT NULL,
            seconds     REAL NOT NULL,
            receipt     TEXT NOT NULL,
            created_at  REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX boots_by_spec ON boots (spec_key, created_at)")
    db.execute("CREATE INDEX boots_by_endpoint ON boots (endpoint_id)")
    db.execute(
        """
        CREATE TABLE snapshots (
            name        TEXT PRIMARY KEY,
            spec_key    TEXT NOT NULL,
            spec        TEXT NOT NULL,
            endpoint_id TEXT,
            gpu_type    TEXT,
            created_at  REAL NOT NULL
        )
        """
    )


def _labels(spec_json: str) -> dict[str, str]:
    try:
        labels = json.loads(spec_json).get("labels") or {}
    except (ValueError, AttributeError):
        return {}
    return labels if isinstance(labels, dict) else {}


@migration
def m007_endpoint_header_roles(db: sqlite3.Connection) -> None:
    """Each endpoint says which of its headers carries its token and what sandserve's probes add, as its
    provider names them (these names were once fixed in endpoint.py)."""
    from sandserve.providers import provider_class

    rows = db.execute("SELECT id, provider, endpoint FROM endpoints WHERE endpoint IS NOT NULL").fetchall()
    for endpoint_id, provider_name, endpoint_json in rows:
        try:
            endpoint = json.loads(endpoint_json)
        except ValueError:
            continue
        if not isinstance(endpoint, dict) or "token_header" in endpoint:
            continue
        provider = provider_class(provider_name)
        headers = endpoint.get("headers") or {}
        token_header = provider.token_header if provider else None
        endpoint["token_header"] = token_header if token_header in headers else None
        endpoint["probe_headers"] = dict(provider.probe_headers) if provider else {}
        db.execute("UPDATE endpoints SET endpoint = ? WHERE id = ?", (json.dumps(endpoint), endpoint_id))
