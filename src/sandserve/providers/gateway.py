"""A fleet's gateway and autoscaler as the ledger sees them: local processes (pid + start time, its own
process group).

Its workers are rows of their own, linked to the gateway's row in the ledger; taking the gateway down takes
them down too (``serve.lifecycle.down``), so ``sandserve down FLEET`` and ``down --all`` end the whole fleet.
"""

from __future__ import annotations

from sandserve.providers.handles import GatewayHandle, ScalerHandle
from sandserve.providers.local import LocalProvider

GATEWAY_PROVIDER = "gateway"


class GatewayProvider(LocalProvider):
    name = GATEWAY_PROVIDER
    handle_type = GatewayHandle


SCALER_PROVIDER = "fleet-scaler"


class ScalerProvider(LocalProvider):
    """A fleet's autoscaler: a local process like the gateway, with a ledger row of its own (so ``ls`` shows
    it, and shows it dead if it died), labelled with its fleet so that taking the fleet down stops it too."""

    name = SCALER_PROVIDER
    handle_type = ScalerHandle
