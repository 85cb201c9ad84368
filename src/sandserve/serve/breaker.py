"""The boot breaker: a spec whose last N boots all failed is not booted again (and billed again) until forced.

It reads the ledger's existing rows: a failed boot is a row of the same spec that ended with an error after
its server had started (it has a saved log). A success, or a clean take-down, resets the count. Ctrl-C and
failures before any sandbox existed (quota, credentials) do not count: they say nothing about the spec.
"""

from __future__ import annotations

import json
from typing import Any

from sandserve.errors import BootBreakerOpenError
from sandserve.serve.ledger import Record, Registry, State
from sandserve.spec import ServeSpec

#: Failed boots in a row after which the same spec is refused.
FAILURES_TO_TRIP = 3
#: Spec fields that do not change what boots (a new port, a new key, cleanup policy).
_NOT_PART_OF_THE_SPEC = frozenset({"api_key", "hf_token", "port", "delete_on_failure"})
_INTERRUPTED = "interrupted while booting"


def fingerprint(spec_record: dict[str, Any]) -> str:
    kept = {k: v for k, v in spec_record.items() if k not in _NOT_PART_OF_THE_SPEC}
    return json.dumps(json.loads(json.dumps(kept, default=str)), sort_keys=True)


def _failed_boot(record: Record) -> bool:
    return (
        record.state in (State.FAILED, State.DOWN)
        and bool(record.error)
        and record.error != _INTERRUPTED
        and record.log_path is not None
    )


def failures_in_a_row(spec: ServeSpec, registry: Registry) -> list[Record]:
    """The latest failed boots of this same spec, newest first, up to its last success."""
    wanted = fingerprint(spec.to_record())
    same = [r for r in registry.list(include_down=True) if fingerprint(r.spec) == wanted]
    failures = []
    for record in sorted(same, key=lambda r: r.created_at, reverse=True):
        if record.state is State.BOOTING:
            continue
        if not _failed_boot(record):
            if record.error in (None, "") or record.state is State.READY:
                break
            continue
        failures.append(record)
    return failures


def check(spec: ServeSpec, registry: Registry, *, force: bool = False, limit: int = FAILURES_TO_TRIP) -> None:
    """Raise BootBreakerOpenError when the same spec failed to boot ``limit`` times in a row."""
    if force:
        return
    failures = failures_in_a_row(spec, registry)
    if len(failures) >= limit:
        last = failures[0]
        raise BootBreakerOpenError(len(failures), last.error, last.id)
