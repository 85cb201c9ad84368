"""What a user does with a served thing once it is up, by id or by handle: status, logs, down.

``sandserve.down(ref)`` and ``Endpoint.status()`` / ``.logs()`` / ``.down()`` come here (the Endpoint through
the services the package installs). ``ref`` is an endpoint id, a unique id prefix, an ``Endpoint``, or None
for the only endpoint up.
"""

from __future__ import annotations

from sandserve.endpoint import Endpoint, EndpointStatus
from sandserve.errors import EndpointNotFoundError
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Record, Registry, ledger_of

Ref = str | Endpoint | None


def record_of(ref: Ref, registry: Registry) -> Record:
    if isinstance(ref, Endpoint):
        if ref.id == "env":
            # Described by ENDPOINT in the environment: nothing of it is in the ledger.
            raise EndpointNotFoundError(ref.url)
        return registry.get(ref.id)
    return registry.resolve(ref)


def status(ref: Ref = None, *, registry: Registry | None = None) -> EndpointStatus:
    """The endpoint's state in the ledger, checked with its provider."""
    registry = registry or _ledger(ref)
    record = lifecycle.refresh(record_of(ref, registry), registry)
    return EndpointStatus(
        id=record.id,
        state=record.shown_state,
        live=record.live,
        error=record.error,
        log_path=record.log_path,
    )


def logs(ref: Ref = None, *, registry: Registry | None = None) -> str:
    """The server's whole log so far."""
    registry = registry or _ledger(ref)
    return lifecycle.read_log(record_of(ref, registry))


def down(ref: Ref = None, *, registry: Registry | None = None) -> str:
    """Stop the endpoint (a fleet: its gateway, then its workers) and delete its sandbox; its id."""
    registry = registry or _ledger(ref)
    record = record_of(ref, registry)
    lifecycle.down(record, registry)
    return record.id


def _ledger(ref: Ref) -> Registry:
    """A handle's own ledger (the one it came from); an id is looked up in the user's."""
    return ledger_of(ref) if isinstance(ref, Endpoint) else Registry()
