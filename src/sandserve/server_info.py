"""What a server is, whatever engine serves it: what clients can ask of it, and what boot learnt about it.

Apart from ``results`` (what an endpoint answers with) because every Endpoint carries a ``ServerInfo``: the
ledger, and so `ls` and `env`, load only these three classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Capabilities:
    """What clients can ask of an engine. Honest per engine: a False here means the library refuses the
    call."""

    streaming: bool = True
    reasoning_split: bool = True
    reasoning_effort: bool = False
    json_schema: bool = True
    regex: bool = False
    ebnf: bool = False
    native_generate: bool = False
    tool_calls: bool = True
    cache_report: bool = True
    responses_tools: bool = True
    """Function tools on ``/v1/responses`` (SGLang 0.5.12.post1's ResponsesRequest refuses them)."""
    responses_json_schema: bool = True
    """A JSON schema in the Responses API's ``text.format`` enforced (SGLang 0.5.12.post1 ignores it)."""

    def as_dict(self) -> dict[str, bool]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BootPhase:
    phase: str
    seconds: float
    """Since ``up`` started."""


@dataclass(frozen=True)
class ServerInfo:
    """What boot learnt about a server: its capacity, its boot timeline, what it can do.

    Reading it like the dict it replaced (``info.get("kv_pool_tokens")``, ``info["preset"]``) still works for
    callers not yet moved to the fields; ``extra`` keeps keys that are not fields (a fleet's policy...).
    """

    kv_pool_tokens: int | None = None
    max_total_num_tokens: int | None = None
    max_running_requests: int | None = None
    context_len: int | None = None
    version: str | None = None
    boot_timeline: tuple[BootPhase, ...] = ()
    capabilities: Capabilities | None = None
    preset: str | None = None
    model_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the ledger's and ``status --json``'s): unset fields left out."""
        data: dict[str, Any] = {}
        for name in _SERVER_INFO_FIELDS:
            value = getattr(self, name)
            if value is None or value == ():
                continue
            if name == "boot_timeline":
                value = [{"phase": step.phase, "seconds": step.seconds} for step in value]
            elif name == "capabilities":
                value = value.as_dict()
            data[name] = value
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ServerInfo:
        data = dict(data or {})
        known = {name: data.pop(name) for name in _SERVER_INFO_FIELDS if name in data}
        timeline = tuple(
            BootPhase(str(step["phase"]), float(step["seconds"]))
            for step in known.pop("boot_timeline", None) or ()
            if isinstance(step, dict)
        )
        capabilities = known.pop("capabilities", None)
        if isinstance(capabilities, dict):
            capabilities = Capabilities(
                **{k: bool(v) for k, v in capabilities.items() if k in Capabilities.__dataclass_fields__}
            )
        return cls(
            **known,
            boot_timeline=timeline,
            capabilities=capabilities if isinstance(capabilities, Capabilities) else None,
            extra=data,
        )

    def with_values(self, **values: Any) -> ServerInfo:
        """A copy with the given fields set (``None`` values are ignored: what is known stays known)."""
        return replace(self, **{name: value for name, value in values.items() if value is not None})

    # The dict it replaced, read-only.
    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()


_SERVER_INFO_FIELDS = (
    "kv_pool_tokens",
    "max_total_num_tokens",
    "max_running_requests",
    "context_len",
    "version",
    "boot_timeline",
    "capabilities",
    "preset",
    "model_path",
)
