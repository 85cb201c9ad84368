"""What an endpoint answers with, whatever engine serves it: cache figures, raw generations, capabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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
    """What clients can ask of an engine. Honest per engine: a False here means the library refuses the call."""

    streaming: bool = True
    reasoning_split: bool = True
    reasoning_effort: bool = False
    json_schema: bool = True
    regex: bool = False
    ebnf: bool = False
    native_generate: bool = False
    tool_calls: bool = True
    cache_report: bool = True

    def as_dict(self) -> dict[str, bool]:
        return dict(self.__dict__)
