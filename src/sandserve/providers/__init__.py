"""Sandbox providers: where a server runs and how clients reach it.

Each provider is a ``Provider`` subclass that registers itself under its ``name``; the built-in ones are
imported on first use, so a verb pays only for the provider it touches.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Any

from sandserve.errors import ConfigError
from sandserve.providers.base import Exposure, Provider
from sandserve.providers.handles import (
    DaytonaHandle,
    GatewayHandle,
    LocalHandle,
    Member,
    SandboxHandle,
    ScalerHandle,
)

#: Where each built-in provider lives (imported by name: nothing is loaded before it is needed).
BUILTIN_PROVIDERS = {
    "local": "sandserve.providers.local",
    "daytona": "sandserve.providers.daytona",
    "gateway": "sandserve.providers.gateway",
    "fleet-scaler": "sandserve.providers.gateway",
}
#: The providers a user may serve on (the gateway is a fleet's own process).
PROVIDER_NAMES = ("local", "daytona")


def _load(name: str) -> None:
    if name not in Provider.registered and name in BUILTIN_PROVIDERS:
        importlib.import_module(BUILTIN_PROVIDERS[name])


@cache
def get_provider(name: str) -> Provider[Any]:
    """One provider object per process: the local one remembers the children it started, so the object that
    started a server is the one that stops and reaps it."""
    if type(name) is not str:  # ProviderName.LOCAL and "local" are cached apart: make them one provider
        return get_provider(str(name))
    _load(name)
    try:
        provider_class = Provider.registered[name]
    except KeyError:
        raise ConfigError(
            f"Unknown provider {name!r}.", hint=f"Use one of: {', '.join(PROVIDER_NAMES)}."
        ) from None
    return provider_class()


def provider_class(name: str) -> type[Provider[Any]] | None:
    """The class registered as ``name`` (None for a name no provider has), for what it says of itself."""
    _load(name)
    return Provider.registered.get(name)


def find_provider(name: str) -> Provider[Any] | None:
    """The provider registered as ``name``; None for a name no provider has (``env``: an endpoint reached
    through ENDPOINT/TOKEN)."""
    _load(name)
    return get_provider(name) if name in Provider.registered else None


def recognise_provider(url: str, header_names: frozenset[str]) -> Provider[Any] | None:
    """The provider whose endpoints look like this one, known only by its URL and header names."""
    for name in PROVIDER_NAMES:
        provider = get_provider(name)
        if provider.recognises(url, header_names):
            return provider
    return None


def handle_from_record(record: Mapping[str, Any]) -> SandboxHandle:
    """A ledger's sandbox JSON as its provider's handle type. The built-in handle types live in ``handles``;
    a provider's module is loaded only when its type is not known yet (`ls` and `env` load none)."""
    provider = str(record.get("provider", ""))
    if provider not in SandboxHandle.handle_types:
        _load(provider)
    return SandboxHandle.from_record(record)


__all__ = [
    "BUILTIN_PROVIDERS",
    "PROVIDER_NAMES",
    "DaytonaHandle",
    "Exposure",
    "GatewayHandle",
    "LocalHandle",
    "Member",
    "Provider",
    "SandboxHandle",
    "ScalerHandle",
    "find_provider",
    "get_provider",
    "handle_from_record",
    "recognise_provider",
]
