"""Prefix-cache visibility: how many prompt tokens of a response came from the server's cache.

SGLang reports ``usage.prompt_tokens_details = {"cached_tokens": N}`` only when it runs with
``--enable-cache-report`` and N > 0; otherwise the field is null (a cold cache, or no report), which counts as
0. llama.cpp reports it on every response. SGLang's native ``/generate`` puts ``cached_tokens`` in
``meta_info``.
"""

from __future__ import annotations

from typing import Any

from sandserve.results import CacheStats


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def cache_stats(response: Any) -> CacheStats:
    """Cached and prompt tokens of a chat/completion response (an SDK object, a LiteLLM ``ModelResponse`` or a
    plain dict), of its ``usage`` alone, or of a ``/generate`` answer (``meta_info``). Nulls count as 0."""
    meta = _field(response, "meta_info")
    if meta is not None:
        return CacheStats(int(_field(meta, "cached_tokens") or 0), int(_field(meta, "prompt_tokens") or 0))
    usage = _field(response, "usage")
    if usage is None and _field(response, "prompt_tokens") is not None:
        usage = response  # already a usage object
    details = _field(usage, "prompt_tokens_details")
    return CacheStats(int(_field(details, "cached_tokens") or 0), int(_field(usage, "prompt_tokens") or 0))
