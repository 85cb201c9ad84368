"""An endpoint already serving the same spec: a second `up` of it hands that one back instead of starting a
duplicate (after which every verb would need an id)."""

from __future__ import annotations

import json
from typing import Any

from sandserve.serve.ledger import Record, Registry, State
from sandserve.serve.lifecycle import refresh
from sandserve.spec import ServeSpec

#: Fields that do not change what is served: how long to wait for it, what to do if it fails, secrets (never
#: in the ledger), and the model's file (a preset's file path is filled in at boot).
_NOT_WHAT_IS_SERVED = frozenset(
    {"boot_timeout", "create_timeout", "delete_on_failure", "api_key", "hf_token", "model"}
)


def running_twin(spec: ServeSpec, registry: Registry | None = None) -> Record | None:
    """The newest endpoint that is up, live and serving what ``spec`` asks for, or None. A fleet's workers are
    never one: they belong to their fleet."""
    registry = registry or Registry()
    wanted = _what_is_served(spec.to_record())
    for record in sorted(registry.list(), key=lambda r: r.created_at, reverse=True):
        if record.state is not State.READY or record.parent_id is not None or record.endpoint is None:
            continue
        if _what_is_served(record.spec) == wanted and refresh(record).live:
            return record
    return None


def _what_is_served(spec_record: dict[str, Any]) -> dict[str, Any]:
    # As the ledger keeps it (JSON: tuples as lists), so a new spec and a recorded one compare alike.
    spec_record = json.loads(json.dumps(spec_record, default=str))
    served = {key: value for key, value in spec_record.items() if key not in _NOT_WHAT_IS_SERVED}
    for part in ("provider_settings", "engine_settings", "resources"):  # the typed parts, alike
        if isinstance(served.get(part), dict):
            served[part] = {k: v for k, v in served[part].items() if k not in _NOT_WHAT_IS_SERVED}
    # A preset names the model; without one, the model is the file or Hugging Face id given.
    served["model"] = spec_record.get("preset") or spec_record.get("model")
    return served
