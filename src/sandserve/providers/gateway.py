"""A fleet's gateway as the ledger sees it: a local process (pid + start time, its own process group).

Its workers are rows of their own, linked to the gateway's row in the ledger; taking the gateway down takes
them down too (``serve.lifecycle.down``), so ``sandserve down FLEET`` and ``down --all`` end the whole fleet.
"""

from __future__ import annotations

from sandserve.providers.handles import GatewayHandle
from sandserve.providers.local import LocalProvider

GATEWAY_PROVIDER = "gateway"


class GatewayProvider(LocalProvider):
    name = GATEWAY_PROVIDER
    handle_type = GatewayHandle
