"""Each provider's record of one sandbox, typed: what the ledger keeps so the sandbox is found again.

``SandboxHandle(provider, sandbox_id, ...)`` makes the handle type registered for ``provider``
(``LocalHandle``, ``GatewayHandle``, ``ScalerHandle``, ``DaytonaHandle``); the JSON the ledger stores is
``to_record()``, read back by ``from_record()``. Keys of a stored record that no field holds are kept in
``extra`` (so a ledger row written by a newer version loses nothing when this one writes it again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

_IDENTITY = ("provider", "sandbox_id", "extra")


@dataclass
class SandboxHandle:
    provider: str
    sandbox_id: str
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    """Keys of the stored record that no field holds (see the module docstring)."""
    log_path: str | None = field(default=None, kw_only=True)
    """Where the server's whole log is kept on this machine (None: read it through the provider)."""

    handle_types: ClassVar[dict[str, type[SandboxHandle]]] = {}

    def __init_subclass__(cls, provider: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if provider is not None:
            SandboxHandle.handle_types[provider] = cls

    def __new__(cls, provider: str = "", *args: Any, **kwargs: Any) -> SandboxHandle:
        if cls is SandboxHandle:
            cls = SandboxHandle.handle_types.get(provider, cls)
        return object.__new__(cls)

    def to_record(self) -> dict[str, Any]:
        """The JSON form the ledger keeps (unset or empty fields left out, ``extra``'s keys beside them)."""
        record: dict[str, Any] = {"provider": self.provider, "sandbox_id": self.sandbox_id}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is not None and value != [] and value != {}:
                record[name] = _plain(value)
        for key, value in self.extra.items():
            record.setdefault(key, value)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SandboxHandle:
        """A handle from ``to_record()``'s JSON, or from the older ``{"provider", "sandbox_id", "data"}``."""
        provider, sandbox_id = str(record["provider"]), str(record["sandbox_id"])
        stored = {key: value for key, value in record.items() if key not in ("provider", "sandbox_id")}
        if isinstance(stored.get("data"), dict) and len(stored) == 1:
            stored = {k: v for k, v in stored["data"].items() if k not in ("provider", "sandbox_id")}
        handle_type = SandboxHandle.handle_types.get(provider, SandboxHandle)
        names = set(_field_names(handle_type))
        fields = {key: value for key, value in stored.items() if key in names and value is not None}
        extra = {key: value for key, value in stored.items() if key not in names}
        return handle_type(provider, sandbox_id, extra=extra, **handle_type._decode(fields))

    @classmethod
    def _decode(cls, fields: dict[str, Any]) -> dict[str, Any]:
        """The stored JSON values of this type's fields as the fields hold them (a subclass with nested
        dataclasses turns their dicts back into them)."""
        return fields


def _field_names(handle_type: type[SandboxHandle]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(handle_type) if f.name not in _IDENTITY)


def _plain(value: Any) -> Any:
    """A field's value as JSON takes it (nested dataclasses as dicts)."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@dataclass(kw_only=True)
class LocalHandle(SandboxHandle, provider="local"):
    """A process on this machine, recognised by pid and start time (a recycled pid never passes for it)."""

    port: int | None = None
    pid: int | None = None
    start_time: str | None = None
    """The kernel's start time of ``pid`` (clock ticks since boot)."""
    token: str | None = None
    """In auth mode token: what clients send in the preview-token header (the adapter checks it)."""
    inside_key: str | None = None
    """In auth mode token: the Bearer key of code run beside the server on this machine, which (as inside a
    Daytona sandbox, where it would reach localhost) needs no preview token."""


@dataclass(frozen=True)
class Member:
    """One worker of a fleet: its endpoint in the ledger and its id in the gateway."""

    endpoint_id: str
    worker_id: str
    """The gateway's UUID for the worker (``DELETE /workers/{worker_id}``)."""
    url: str


@dataclass(kw_only=True)
class GatewayHandle(LocalHandle, provider="gateway"):
    """A fleet's gateway process and what the fleet knows of it."""

    prometheus_port: int | None = None
    policy: str | None = None
    members: list[Member] = field(default_factory=list)
    gateway: str | None = None
    """Which gateway program runs it (sglang-router, smg)."""

    @classmethod
    def _decode(cls, fields: dict[str, Any]) -> dict[str, Any]:
        # Only the keys Member has: a row a newer version wrote still loads.
        known = {f.name for f in dataclasses.fields(Member)}
        members = [
            Member(**{key: value for key, value in member.items() if key in known})
            for member in fields.get("members", [])
        ]
        return {**fields, "members": members}


@dataclass(kw_only=True)
class ScalerHandle(LocalHandle, provider="fleet-scaler"):
    """A fleet's autoscaler process, with what it is told and what it last decided."""

    settings: dict[str, Any] = field(default_factory=dict)
    """Its bounds and timings (``fleet.autoscale.ScalerSettings.as_dict()``), written by ``fleet up`` and
    ``fleet scale``, re-read by the process at every look."""
    state: dict[str, Any] = field(default_factory=dict)
    """What the process last saw and decided (written by the process only)."""


@dataclass(kw_only=True)
class DaytonaHandle(SandboxHandle, provider="daytona"):
    """A Daytona sandbox and the session command that runs the server in it."""

    port: int | None = None
    session: str | None = None
    cmd_id: str | None = None
    """The session command running the server (None until it was started)."""
    snapshot: str | None = None
    """The golden snapshot the sandbox was created from (None: from the image)."""
    gpu_type: str | None = None
    """The GPU type the sandbox got."""
