"""Prefix-cache figures from every shape a response comes in: SDK objects, dicts, usage alone, /generate."""

from __future__ import annotations

from types import SimpleNamespace

from sandserve.client.usage import cache_stats
from sandserve.results import CacheStats


def test_an_sdk_response_with_cached_tokens():
    usage = SimpleNamespace(prompt_tokens=976, prompt_tokens_details=SimpleNamespace(cached_tokens=975))
    assert cache_stats(SimpleNamespace(usage=usage)) == CacheStats(975, 976)


def test_sglangs_null_details_count_as_zero():
    assert cache_stats({"usage": {"prompt_tokens": 12, "prompt_tokens_details": None}}) == CacheStats(0, 12)
    assert cache_stats({"usage": {"prompt_tokens": 12}}) == CacheStats(0, 12)
    details = SimpleNamespace(cached_tokens=None)
    usage = SimpleNamespace(prompt_tokens=5, prompt_tokens_details=details)
    assert cache_stats(SimpleNamespace(usage=usage)) == CacheStats(0, 5)


def test_a_usage_object_on_its_own():
    usage = {"prompt_tokens": 40, "prompt_tokens_details": {"cached_tokens": 32}}
    assert cache_stats(usage) == CacheStats(32, 40)


def test_a_native_generate_answer():
    assert cache_stats({"meta_info": {"prompt_tokens": 9, "cached_tokens": 8}}) == CacheStats(8, 9)
    assert cache_stats({"meta_info": {"prompt_tokens": 9, "cached_tokens": None}}) == CacheStats(0, 9)


def test_no_usage_at_all_is_zero_of_zero():
    stats = cache_stats({"choices": []})
    assert stats == CacheStats(0, 0) and stats.share == 0.0


def test_the_share():
    assert CacheStats(3, 4).share == 0.75
