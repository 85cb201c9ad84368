"""Token usage of any answer, read one way: ``usage_of`` (and ``cache_stats``, its prefix-cache part).

What servers send:
- OpenAI-style ``usage`` (chat and completions, both engines): ``prompt_tokens``, ``completion_tokens`` and
  ``prompt_tokens_details.cached_tokens``. SGLang fills the details only with ``--enable-cache-report`` and
  N > 0; otherwise the field is null (a cold cache, or no report), which counts as 0. llama.cpp reports it on
  every response.
- SGLang's native ``/generate``: the same counts in ``meta_info``; a batched ``/generate`` answers a list.
The answer may be an SDK object, a LiteLLM ``ModelResponse``, a plain dict, or a usage block on its own.
Missing, null, negative or non-integer counts are 0.
"""

from __future__ import annotations

from typing import Any

from sandserve.results import CacheStats, TokenUsage

NO_USAGE = TokenUsage()


def usage_of(answer: Any) -> TokenUsage:
    """The token counts of ``answer`` (see the module docstring for the shapes read)."""
    if isinstance(answer, list):
        total = NO_USAGE
        for item in answer:
            total = total + usage_of(item)
        return total
    meta = _field(answer, "meta_info")
    if meta is not None:
        return _counts(meta, _field(meta, "cached_tokens"))
    usage = _field(answer, "usage")
    if usage is None and _field(answer, "prompt_tokens") is not None:
        usage = answer  # already a usage block
    if usage is None:
        return NO_USAGE
    return _counts(usage, _field(_field(usage, "prompt_tokens_details"), "cached_tokens"))


def cache_stats(response: Any) -> CacheStats:
    """Cached and prompt tokens of a response (any shape ``usage_of`` reads). Nulls count as 0."""
    return usage_of(response).cache


def _counts(block: Any, cached: Any) -> TokenUsage:
    return TokenUsage(
        _count(_field(block, "prompt_tokens")), _count(_field(block, "completion_tokens")), _count(cached)
    )


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


__all__ = ["NO_USAGE", "CacheStats", "TokenUsage", "cache_stats", "usage_of"]
