"""The load sources' parsers and rates, on the exact shapes the servers send (no process started)."""

from __future__ import annotations

from sandserve.engines.load_formats import parse_slots, parse_v1_loads
from sandserve.observe.loads import (
    EndpointLoad,
    LoadCounters,
    merge,
    parse_prometheus,
    rates,
)
from sandserve.observe.prometheus import parse_metrics, total

# What llama-server (the build this project uses) answered on /metrics after three 400-token completions.
LLAMACPP_METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 9
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 3
llamacpp:prompt_seconds_total 0.001583
llamacpp:tokens_predicted_total 1200
llamacpp:tokens_predicted_seconds_total 0.29916
llamacpp:n_decode_total 800
llamacpp:prompt_tokens_seconds 5685.41
llamacpp:predicted_tokens_seconds 4001.2
llamacpp:requests_processing 2
llamacpp:requests_deferred 1
llamacpp:n_busy_slots_per_decode 1.5
"""

# SGLang's /metrics: one DP rank reported by two TP ranks (same scheduler), plus a second DP rank.
SGLANG_METRICS = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="0"} 5.0
sglang:num_running_reqs{model_name="m",tp_rank="1",dp_rank="0"} 5.0
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="1"} 3.0
sglang:num_queue_reqs{model_name="m",dp_rank="0"} 7.0
sglang:num_queue_reqs{model_name="m",dp_rank="1"} 0.0
sglang:token_usage{model_name="m",dp_rank="0"} 0.5
sglang:token_usage{model_name="m",dp_rank="1"} 0.25
sglang:cache_hit_rate{model_name="m"} 0.8
sglang:prompt_tokens_total{model_name="m"} 8.128902e+06
sglang:generation_tokens_total{model_name="m"} 1000.0
sglang:cached_tokens_total{model_name="m"} 4.0e+06
sglang:num_requests_total{model_name="m"} 200
sglang:max_total_num_tokens{model_name="m"} 1220512
"""

# SGLang's /v1/loads (entrypoints/v1_loads.py): per DP rank, then the aggregate.
SGLANG_V1_LOADS = {
    "timestamp": "2026-12-02T10:00:00+00:00",
    "version": "0.5.12.post1",
    "dp_rank_count": 2,
    "loads": [
        {
            "dp_rank": 0,
            "num_running_reqs": 4,
            "num_waiting_reqs": 2,
            "num_used_tokens": 1000,
            "max_total_num_tokens": 10000,
            "token_usage": 0.1,
            "gen_throughput": 500.0,
            "cache_hit_rate": 0.5,
            "utilization": 0.1,
            "max_running_requests": 48,
            "queues": {"waiting": 2, "grammar": 0, "paused": 0, "retracted": 0},
            "num_total_reqs": 6,
        },
        {
            "dp_rank": 1,
            "num_running_reqs": 1,
            "num_waiting_reqs": 0,
            "num_used_tokens": 3000,
            "max_total_num_tokens": 10000,
            "token_usage": 0.3,
            "gen_throughput": 100.0,
            "cache_hit_rate": 0.7,
            "utilization": 0.02,
            "max_running_requests": 48,
            "num_total_reqs": 1,
        },
    ],
    "aggregate": {"total_running_reqs": 5, "total_waiting_reqs": 2, "total_reqs": 7},
}

# llama.cpp's /slots while one of two slots generates.
LLAMACPP_SLOTS = [
    {
        "id": 0,
        "n_ctx": 4096,
        "is_processing": True,
        "n_prompt_tokens": 403,
        "next_token": [{"has_next_token": True, "n_remain": 300, "n_decoded": 97}],
    },
    {"id": 1, "n_ctx": 4096, "speculative": False, "is_processing": False},
]


def reading() -> EndpointLoad:
    return EndpointLoad(endpoint_id="e", url="http://x", at=0.0, monotonic=0.0)


def test_the_prometheus_parser_reads_labels_values_and_exponents():
    samples = parse_metrics(SGLANG_METRICS)
    assert samples["sglang:prompt_tokens_total"][0].value == 8128902.0
    assert samples["sglang:num_running_reqs"][0].labels == {"model_name": "m", "tp_rank": "0", "dp_rank": "0"}


def test_tensor_parallel_ranks_are_not_counted_twice():
    # dp 0 reports 5 on two TP ranks, dp 1 reports 3: the server runs 8, not 13.
    assert total(parse_metrics(SGLANG_METRICS), "sglang:num_running_reqs") == 8


def test_sglang_metrics_give_every_field():
    parsed, counters = parse_prometheus(parse_metrics(SGLANG_METRICS))
    load = merge(reading(), [parsed], counters)
    assert (load.running, load.queued, load.capacity_tokens) == (8, 7, 1220512)
    assert load.token_usage == 0.375 and load.cache_hit_rate == 0.8
    assert counters == LoadCounters(
        prompt_tokens=8128902.0, generation_tokens=1000.0, cached_tokens=4.0e6, requests=200
    )


def test_llamacpp_prompt_tokens_include_the_cached_ones():
    parsed, counters = parse_prometheus(parse_metrics(LLAMACPP_METRICS))
    # llama.cpp counts uncached prompt tokens (9) apart from cached ones (3).
    assert counters.prompt_tokens == 12 and counters.cached_tokens == 3 and counters.generation_tokens == 1200
    assert counters.requests is None  # llama.cpp has no request counter: unknown, not 0
    load = merge(reading(), [parsed], counters)
    assert (load.running, load.queued) == (2, 1)
    assert load.cache_hit_rate == 0.25  # from the counters, as the server reports no gauge


def test_v1_loads_sums_ranks_and_averages_ratios():
    parsed = parse_v1_loads(SGLANG_V1_LOADS)
    assert (parsed.running, parsed.queued, parsed.used_tokens, parsed.capacity_tokens) == (5, 2, 4000, 20000)
    assert parsed.token_usage == 0.2 and parsed.cache_hit_rate == 0.6 and parsed.gen_throughput == 600


def test_slots_give_running_and_token_usage():
    parsed = parse_slots(LLAMACPP_SLOTS)
    assert parsed.running == 1 and parsed.capacity_tokens == 8192 and parsed.used_tokens == 500
    assert parsed.token_usage == 500 / 8192
    # llama.cpp counts a request's generated tokens only when it ends: those of the running ones, apart.
    assert parsed.decoding_tokens == 97


def test_the_most_direct_source_wins_and_gaps_are_filled_from_the_others():
    slots = parse_slots(LLAMACPP_SLOTS)
    metrics, counters = parse_prometheus(parse_metrics(LLAMACPP_METRICS))
    load = merge(reading(), [slots, metrics], counters)
    assert load.running == 1  # /slots, not requests_processing (2)
    assert load.queued == 1  # only /metrics knows deferred requests


def test_unexpected_shapes_give_unknowns_not_errors():
    assert parse_v1_loads({"detail": "Not Found"}).running is None
    assert parse_slots({"error": "x"}).running is None
    load = merge(reading(), [parse_v1_loads([])])
    assert load.running is None and load.token_usage is None


def test_rates_come_from_counter_deltas():
    before, after = reading(), reading()
    before.counters = LoadCounters(prompt_tokens=100, generation_tokens=10, cached_tokens=50, requests=1)
    after.monotonic = 2.0
    after.counters = LoadCounters(prompt_tokens=300, generation_tokens=50, cached_tokens=200, requests=5)
    r = rates(before, after)
    assert (r.prompt_tokens_per_s, r.generation_tokens_per_s, r.requests_per_s) == (100, 20, 2)
    assert r.cache_hit_rate == 0.75


def test_a_restarted_server_gives_no_rate_rather_than_a_negative_one():
    before, after = reading(), reading()
    before.counters = LoadCounters(prompt_tokens=1000, generation_tokens=100)
    after.monotonic = 1.0
    after.counters = LoadCounters(prompt_tokens=10, generation_tokens=1)
    r = rates(before, after)
    assert r.prompt_tokens_per_s is None and r.generation_tokens_per_s is None and r.requests_per_s is None
