"""The GPU capacity answer (``GET /organizations/{id}/gpu-capacity``): free units per GPU type across the
shared fleet. A short-lived observation (the service caches it a few seconds; quotas are not applied): it
lets a plan skip a type with nothing free, and the create stays the authority.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daytona import Daytona


def free_gpus(client: Daytona, *, spot: bool) -> tuple[dict[str, int] | None, str]:
    """Free units per GPU type (spot or on demand), or None and why the answer could not be had."""
    from daytona_api_client import ApiKeysApi, OrganizationsApi

    # The SDK wraps neither call; its generated API client carries the key, URL and headers they need.
    api_client = client._api_client
    try:
        organization = client._organization_id or ApiKeysApi(api_client).get_current_api_key().organization_id
        if not organization:
            return None, "the API key names no organization"
        answer = OrganizationsApi(api_client).get_gpu_capacity(organization)
    except Exception as exc:  # an older service, a key without the permission: advice, not a gate
        return None, f"the capacity answer failed ({type(exc).__name__}: {_first_line(exc)})"
    free = {
        entry.gpu_type.value: entry.available_spot if spot else entry.available_on_demand
        for entry in answer.capacity
    }
    return free, f"observed at {answer.observed_at:%H:%M:%S} UTC"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:120]
