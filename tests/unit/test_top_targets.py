"""Which endpoints `sandserve top` watches, read from the ledger (SQLite in the test's own state
directory)."""

from __future__ import annotations

import pytest

from sandserve.endpoint import Endpoint
from sandserve.errors import EndpointNotFoundError
from sandserve.observe.top import load_endpoints_for, targets_for
from sandserve.providers.base import SandboxHandle
from sandserve.serve.ledger import FLEET_LABEL, Registry, State


def add(
    registry: Registry, endpoint_id: str, *, fleet: str | None = None, state: State = State.READY
) -> None:
    labels = {FLEET_LABEL: fleet} if fleet else {}
    registry.add(
        endpoint_id,
        provider="local",
        engine="llamacpp",
        model="tiny",
        spec={"labels": labels},
        sandbox=SandboxHandle("local", endpoint_id),
    )
    endpoint = Endpoint(
        id=endpoint_id, url=f"http://127.0.0.1/{endpoint_id}", model="tiny", engine="llamacpp"
    )
    registry.update(endpoint_id, state=state, endpoint=endpoint)


def test_every_endpoint_up_with_fleets_expanded_under_their_gateway():
    registry = Registry()
    add(registry, "solo")
    add(registry, "fleet-1")
    add(registry, "w1", fleet="fleet-1")
    add(registry, "w2", fleet="fleet-1")
    add(registry, "gone", state=State.DOWN)
    targets = targets_for(registry=registry)
    assert [(t.id, t.role, t.fleet) for t in targets] == [
        ("solo", "endpoint", None),
        ("fleet-1", "gateway", "fleet-1"),
        ("w1", "worker", "fleet-1"),
        ("w2", "worker", "fleet-1"),
    ]
    assert all(t.created_at and t.endpoint is not None for t in targets)


def test_a_ref_names_one_endpoint_or_a_whole_fleet():
    registry = Registry()
    add(registry, "fleet-1")
    add(registry, "w1", fleet="fleet-1")
    add(registry, "other")
    assert [t.id for t in targets_for("fleet-1", registry=registry)] == ["fleet-1", "w1"]
    assert [(t.id, t.role) for t in targets_for("other", registry=registry)] == [("other", "endpoint")]
    # A benchmark of the fleet samples its workers' load; of a plain endpoint, its own.
    workers = load_endpoints_for("fleet-1", registry=registry)
    assert workers is not None and [e.id for e in workers] == ["w1"]
    assert load_endpoints_for("other", registry=registry) is None


def test_nothing_to_watch_says_how_to_start_something():
    with pytest.raises(EndpointNotFoundError) as caught:
        targets_for(registry=Registry())
    assert caught.value.hint
    with pytest.raises(EndpointNotFoundError):
        targets_for("nope", registry=Registry())


def test_the_environment_endpoint_when_the_ledger_is_empty(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ENDPOINT", "http://example.test:8000/v1")
    monkeypatch.setenv("TOKEN", "tok")
    [target] = targets_for(registry=Registry())
    assert target.id == "env" and target.endpoint is not None
    assert target.endpoint.url == "http://example.test:8000" and target.endpoint.headers
