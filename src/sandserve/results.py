"""What an endpoint answers with and what a server is, whatever engine serves it: token usage, cache figures,
raw generations, constraints, capabilities, the server's own figures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal


@dataclass(frozen=True)
class CacheStats:
    cached_tokens: int
    prompt_tokens: int

    @property
    def share(self) -> float:
        """The fraction of the prompt served from cache (0.0 for an empty prompt)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def __str__(self) -> str:
        return f"{self.cached_tokens}/{self.prompt_tokens} prompt tokens from cache"


@dataclass(frozen=True)
class GenerateResult:
    text: str
    finish_reason: str
    """"stop" (finished: end of sequence, a stop string, or the grammar complete) or "length" (max tokens)."""
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The server's own answer, untouched."""

    @property
    def cache(self) -> CacheStats:
        return CacheStats(self.cached_tokens, self.prompt_tokens)

    def json(self) -> Any:
        """The text decoded as JSON (for a JSON-schema constraint)."""
        return json.loads(self.text)


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


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one answer (any engine, any route); ``client.usage.usage_of`` reads them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens served from the server's prefix cache (0 when the server did not say)."""

    @property
    def cache(self) -> CacheStats:
        return CacheStats(self.cached_tokens, self.prompt_tokens)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


ConstraintKind = Literal["regex", "ebnf", "json_schema"]


@dataclass(frozen=True)
class Constraint:
    """One constraint on generated text, whatever engine enforces it."""

    kind: ConstraintKind
    value: Any
    """The regex or grammar text, or the JSON schema (a dict)."""

    @property
    def label(self) -> str:
        return {"regex": "regex", "ebnf": "EBNF grammar", "json_schema": "JSON schema"}[self.kind]


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
