"""`sandserve.client.connect()`: the Endpoint to use, from the ledger or from the environment."""

from __future__ import annotations

from typing import Any

from sandserve.endpoint import Endpoint
from sandserve.errors import EndpointNotFoundError, SandserveError


def connect(endpoint_id: str | None = None) -> Endpoint:
    """The endpoint ``endpoint_id`` names in the ledger; with no id, ENDPOINT (+ TOKEN) from the environment
    when set, else the one endpoint that is up."""
    if endpoint_id is None:
        from_env = Endpoint.from_env()
        if from_env is not None:
            return _identified(from_env)
    from sandserve.errors import AmbiguousEndpointError
    from sandserve.serve.ledger import Registry

    registry = Registry()
    try:
        record = registry.resolve(endpoint_id)
    except AmbiguousEndpointError:
        if endpoint_id is not None:
            raise
        record = _the_live_one(registry)
    if record.endpoint is None:
        raise SandserveError(
            f"Endpoint {record.id} is {record.shown_state}, not ready.",
            hint=f"`sandserve status {record.id}` and `sandserve logs {record.id}` show why.",
        )
    return record.endpoint


def _the_live_one(registry: Any) -> Any:
    """With several endpoints ready in the ledger, the one whose server still runs: a dead one (its process
    or sandbox gone) is never the reason to refuse."""
    from sandserve.errors import AmbiguousEndpointError
    from sandserve.serve.ledger import State
    from sandserve.serve.lifecycle import refresh

    ready = [refresh(r) for r in registry.list() if r.state is State.READY and r.parent_id is None]
    live = [r for r in ready if r.live is not False]
    if len(live) == 1:
        return live[0]
    if not live:
        raise SandserveError(
            f"No endpoint is up: {', '.join(r.id for r in ready)} are in the ledger but their servers are "
            "gone.",
            hint="`sandserve down --all` clears them; `sandserve up` starts a new one.",
        )
    raise AmbiguousEndpointError([r.id for r in live])


def _identified(endpoint: Endpoint) -> Endpoint:
    """ENDPOINT from the environment: ask the server which model it serves (when MODEL is unset) and which
    engine it is, since constraints are sent differently to each (a field one engine ignores would leave the
    output silently unconstrained). An endpoint that does not answer fails here, with the reason."""
    import httpx

    from sandserve.client.transport import raise_for_status
    from sandserve.engines import engine_owning
    from sandserve.errors import EndpointUnavailableError
    from sandserve.tls import tls_context

    try:
        response = httpx.get(
            f"{endpoint.base_url}/models",
            headers=endpoint.request_headers(),
            timeout=10,
            verify=tls_context(),
        )
    except httpx.HTTPError as exc:
        raise EndpointUnavailableError(endpoint.url, f"could not list its models ({exc})") from exc
    raise_for_status(endpoint.url, response)
    try:
        card = response.json()["data"][0]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise EndpointUnavailableError(endpoint.url, f"its model list is not OpenAI-shaped ({exc})") from exc
    endpoint.model = endpoint.model or str(card.get("id", ""))
    # ``owned_by`` in ``/v1/models`` names the engine; each engine knows its own.
    endpoint.engine = engine_owning(str(card.get("owned_by", ""))) or endpoint.engine
    return _with_what_boot_learnt(endpoint)


def _with_what_boot_learnt(endpoint: Endpoint) -> Endpoint:
    """An endpoint of this ledger, named by ENDPOINT: what its boot learnt (its preset, what its model can do,
    such as a chat template without tools) holds for it too."""
    from sandserve.serve.ledger import Registry

    try:
        record = Registry().find_by_url(endpoint.url)
    except SandserveError:  # a ledger that cannot be read takes nothing from the environment's endpoint
        return endpoint
    if record is not None and record.endpoint is not None and record.endpoint.model == endpoint.model:
        endpoint.info = record.endpoint.info
    return endpoint


__all__ = ["EndpointNotFoundError", "connect"]
