"""Sandbox providers: where a server runs and how clients reach it."""

from __future__ import annotations

from functools import cache

from ..errors import ConfigError
from .base import Exposure, Provider, SandboxHandle

PROVIDER_NAMES = ("local", "daytona")


@cache
def get_provider(name: str) -> Provider:
    """One provider object per process: the local one remembers the children it started."""
    if name == "local":
        from .local import LocalProvider

        return LocalProvider()
    if name == "daytona":
        from .daytona import DaytonaProvider

        return DaytonaProvider()
    if name == "gateway":  # a fleet's gateway: a local process in the ledger (sandserve.fleet)
        from ..fleet import GatewayProvider

        return GatewayProvider()
    raise ConfigError(f"Unknown provider {name!r}.", hint=f"Use one of: {', '.join(PROVIDER_NAMES)}.")


__all__ = ["PROVIDER_NAMES", "Exposure", "Provider", "SandboxHandle", "get_provider"]
