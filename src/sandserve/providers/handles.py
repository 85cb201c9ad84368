"""Each provider's record of one sandbox, typed: what the ledger keeps so the sandbox is found again.

``SandboxHandle(provider, sandbox_id)`` makes the handle type registered for ``provider`` (``LocalHandle``,
``GatewayHandle``, ``DaytonaHandle``); the JSON the ledger stores is ``to_record()``.

Bridge for code written against the dict these replaced: a third positional argument (a mapping) fills the
fields, and ``handle.data`` reads and writes the fields by name. Keys that are not fields are kept in
``extra`` (so a ledger row written by a newer version loses nothing); new code uses the fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import InitVar, dataclass, field
from typing import Any, ClassVar

_IDENTITY = ("provider", "sandbox_id", "extra")


@dataclass
class SandboxHandle:
    provider: str
    sandbox_id: str
    legacy_data: InitVar[Mapping[str, Any] | None] = None
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    """Keys no field holds (see the module docstring)."""
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

    def __post_init__(self, legacy_data: Mapping[str, Any] | None) -> None:
        if legacy_data:
            self.data.update(legacy_data)

    @property
    def data(self) -> MutableMapping[str, Any]:
        """The fields by name, as the dict this handle replaced."""
        return _FieldView(self)

    def to_record(self) -> dict[str, Any]:
        """The JSON form the ledger keeps (unset fields left out)."""
        record: dict[str, Any] = {"provider": self.provider, "sandbox_id": self.sandbox_id}
        record.update({key: value for key, value in self.data.items()})
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SandboxHandle:
        """A handle from ``to_record()``'s JSON, or from the older ``{"provider", "sandbox_id", "data"}``."""
        fields = {key: value for key, value in record.items() if key not in ("provider", "sandbox_id")}
        if isinstance(fields.get("data"), dict) and len(fields) == 1:
            fields = fields["data"]
        return SandboxHandle(str(record["provider"]), str(record["sandbox_id"]), fields)


def _field_names(handle: SandboxHandle) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(handle) if f.name not in _IDENTITY)


class _FieldView(MutableMapping[str, Any]):
    """A handle's fields as a mapping: unset (None) fields are absent; other keys live in ``extra``."""

    def __init__(self, handle: SandboxHandle) -> None:
        self._handle = handle
        self._fields = _field_names(handle)

    def __getitem__(self, key: str) -> Any:
        if key in self._fields:
            value = getattr(self._handle, key)
            if value is None:
                raise KeyError(key)
            return value
        return self._handle.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._fields:
            setattr(self._handle, key, value)
        else:
            self._handle.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._fields:
            if getattr(self._handle, key) is None:
                raise KeyError(key)
            setattr(self._handle, key, None)
        else:
            del self._handle.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from (name for name in self._fields if getattr(self._handle, name) is not None)
        yield from self._handle.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)


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


@dataclass(kw_only=True)
class GatewayHandle(LocalHandle, provider="gateway"):
    """A fleet's gateway process and what the fleet knows of it."""

    prometheus_port: int | None = None
    policy: str | None = None
    members: list[dict[str, Any]] | None = None
    gateway: str | None = None
    """Which gateway program runs it (sglang-router, smg)."""


@dataclass(kw_only=True)
class DaytonaHandle(SandboxHandle, provider="daytona"):
    """A Daytona sandbox and the session command that runs the server in it."""

    port: int | None = None
    session: str | None = None
    cmd_id: str | None = None
