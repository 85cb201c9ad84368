"""`sandserve.connect()`: the Endpoint to use, from the ledger or from the environment."""

from __future__ import annotations

import os

from .endpoint import Endpoint
from .errors import EndpointNotFoundError, SandserveError


def connect(endpoint_id: str | None = None) -> Endpoint:
    """The endpoint ``endpoint_id`` names in the ledger; with no id, ENDPOINT (+ TOKEN) from the environment
    when set, else the one endpoint that is up."""
    if endpoint_id is None:
        from_env = Endpoint.from_env()
        if from_env is not None:
            return from_env if from_env.model else _with_served_model(from_env)
    from .registry import Registry

    record = Registry().resolve(endpoint_id)
    if record.endpoint is None:
        raise SandserveError(
            f"Endpoint {record.id} is {record.shown_state}, not ready.",
            hint=f"`sandserve status {record.id}` and `sandserve logs {record.id}` show why.",
        )
    return record.endpoint


def _with_served_model(endpoint: Endpoint) -> Endpoint:
    """ENDPOINT without MODEL: ask the server which model it serves."""
    import httpx

    from .errors import EndpointUnavailableError

    try:
        response = httpx.get(f"{endpoint.base_url}/models", headers=endpoint.request_headers(), timeout=10)
        response.raise_for_status()
        endpoint.model = response.json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise EndpointUnavailableError(endpoint.url, f"could not list its models ({exc})") from exc
    return endpoint


__all__ = ["connect", "EndpointNotFoundError"]
