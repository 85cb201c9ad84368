"""What an endpoint answers with, whatever engine serves it: token usage, cache figures, raw generations,
constraints; and, from ``server_info``, what a server is (its capabilities, its own figures)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sandserve.server_info import BootPhase, Capabilities, ServerInfo

__all__ = [
    "BootPhase",
    "CacheStats",
    "Capabilities",
    "Constraint",
    "ConstraintKind",
    "GenerateResult",
    "ServerInfo",
    "TokenUsage",
]


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
