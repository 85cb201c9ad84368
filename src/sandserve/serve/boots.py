"""The ledger's boot receipts and golden snapshots (tables ``boots`` and ``snapshots``, migration m005)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sandserve.serve.ledger import Registry
from sandserve.serve.receipt import BootReceipt
from sandserve.spec import ServeSpec


def record_boot(registry: Registry, endpoint_id: str, spec_key: str, receipt: BootReceipt) -> None:
    row = (endpoint_id, spec_key, receipt.origin, receipt.total, json.dumps(receipt.to_dict()), time.time())
    registry.run(lambda db: db.execute("INSERT INTO boots VALUES (?, ?, ?, ?, ?, ?)", row))


def last_boot(registry: Registry, spec_key: str) -> BootReceipt | None:
    """The newest boot of the spec with this key."""
    row = registry.run(
        lambda db: db.execute(
            "SELECT endpoint_id, receipt FROM boots WHERE spec_key = ? ORDER BY created_at DESC LIMIT 1",
            (spec_key,),
        ).fetchone(),
        write=False,
    )
    return BootReceipt.from_dict(json.loads(row[1]), row[0]) if row else None


def boot_of(registry: Registry, endpoint_id: str) -> BootReceipt | None:
    """The receipt of the boot that brought this endpoint up."""
    row = registry.run(
        lambda db: db.execute(
            "SELECT receipt FROM boots WHERE endpoint_id = ? ORDER BY created_at DESC LIMIT 1", (endpoint_id,)
        ).fetchone(),
        write=False,
    )
    return BootReceipt.from_dict(json.loads(row[0]), endpoint_id) if row else None


def boot_seconds(registry: Registry, spec_key: str, origin: str, limit: int = 5) -> list[float]:
    """The totals of the last boots of a spec that started ``origin`` (warm/cold), newest first."""
    rows = registry.run(
        lambda db: db.execute(
            "SELECT seconds FROM boots WHERE spec_key = ? AND origin = ? ORDER BY created_at DESC LIMIT ?",
            (spec_key, origin, limit),
        ).fetchall(),
        write=False,
    )
    return [float(seconds) for (seconds,) in rows]


def expected_boot_seconds(registry: Registry, spec: ServeSpec) -> float | None:
    """How long the next boot of ``spec`` should take: its newest receipt on any of its GPU types (a spec
    with a golden snapshot boots warm, and its newest receipt is a warm one); None: never booted."""
    from sandserve.providers.warmboot import boot_key

    keys = [boot_key(spec, gpu) for gpu in spec.resources.gpu_types] or [boot_key(spec, None)]
    marks = ", ".join("?" for _ in keys)
    row = registry.run(
        lambda db: db.execute(
            f"SELECT seconds FROM boots WHERE spec_key IN ({marks}) ORDER BY created_at DESC LIMIT 1", keys
        ).fetchone(),
        write=False,
    )
    return float(row[0]) if row else None


@dataclass(frozen=True)
class SnapshotRow:
    name: str
    spec_key: str
    spec: str
    endpoint_id: str | None
    gpu_type: str | None
    created_at: float


def record_snapshot(
    registry: Registry, name: str, spec_key: str, spec: str, endpoint_id: str, gpu_type: str | None
) -> None:
    row = (name, spec_key, spec, endpoint_id, gpu_type, time.time())
    registry.run(lambda db: db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?)", row))


def snapshot_rows(registry: Registry) -> dict[str, SnapshotRow]:
    rows = registry.run(lambda db: db.execute("SELECT * FROM snapshots").fetchall(), write=False)
    return {row[0]: SnapshotRow(*row) for row in rows}


def forget_snapshot(registry: Registry, name: str) -> None:
    registry.run(lambda db: db.execute("DELETE FROM snapshots WHERE name = ?", (name,)))
