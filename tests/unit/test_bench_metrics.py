"""Benchmark metrics from recorded timestamps: a server whose first token comes after X and then one token
every Y gives TTFT = X, ITL = TPOT = Y, E2E = X + (N-1)Y, exactly; goodput and attainment count what met
the SLO."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sandserve.errors import ConfigError
from sandserve.observe.bench import BenchConfig, LoadPlan
from sandserve.observe.bench_results import join_load
from sandserve.observe.loads import EndpointLoad, LoadCounters
from sandserve.observe.metrics import RequestRecord, Slo, level_metrics, parse_slo


def scripted(
    index: int, sent: float, first: float, every: float, tokens: int, prompt: int = 7
) -> RequestRecord:
    """The record a request to the scripted server leaves: chunks at sent+first, then every ``every``."""
    times = [sent + first + i * every for i in range(tokens)]
    return RequestRecord(
        index=index,
        sent_at=sent,
        chunk_times=times,
        done_at=times[-1],
        prompt_tokens=prompt,
        completion_tokens=tokens,
        cached_tokens=0,
        ok=True,
    )


def test_one_request_gives_the_scripted_delays_exactly():
    record = scripted(0, sent=10.0, first=0.25, every=0.125, tokens=9)
    assert record.ttft == 0.25
    assert record.itl == [0.125] * 8
    assert record.e2e == 0.25 + 8 * 0.125
    assert record.tpot == 0.125


def test_a_level_of_scripted_requests():
    # Four requests sent 1 s apart, TTFT 0.2, 0.4, 0.6, 0.8 s; a token every 50 ms; 5 tokens each.
    records = [scripted(i, sent=float(i), first=0.2 * (i + 1), every=0.05, tokens=5) for i in range(4)]
    m = level_metrics(records)
    assert (m.sent, m.completed, m.failed) == (4, 4, 0)
    duration = records[-1].done_at - records[0].sent_at  # 3 + 0.8 + 4 * 0.05
    assert m.duration_s == pytest.approx(duration)
    assert m.request_throughput == pytest.approx(4 / duration)
    assert m.output_token_throughput == pytest.approx(20 / duration)
    assert m.input_token_throughput == pytest.approx(28 / duration)
    assert m.ttft.mean == pytest.approx(500.0)
    assert m.ttft.median == pytest.approx(500.0)
    assert m.ttft.p90 == pytest.approx(float(np.percentile([200, 400, 600, 800], 90)))
    assert m.ttft.p99 == pytest.approx(float(np.percentile([200, 400, 600, 800], 99)))
    assert m.tpot.mean == pytest.approx(50.0) and m.itl.median == pytest.approx(50.0)
    assert m.itl.count == 16  # 4 gaps per request
    assert m.e2e.median == pytest.approx(700.0)  # (0.2..0.8 mean 0.5) + 0.2
    assert m.concurrency == pytest.approx(sum(r.e2e for r in records) / duration)
    assert m.goodput is None and m.slo_attainment is None  # no SLO given


def test_goodput_counts_requests_that_met_every_slo():
    records = [scripted(i, sent=float(i), first=0.2 * (i + 1), every=0.05, tokens=5) for i in range(4)]
    failed = RequestRecord(index=4, sent_at=4.0, done_at=4.1, error="500 boom")
    m = level_metrics([*records, failed], parse_slo("ttft=500,tpot=60"))
    # TTFT 200 and 400 ms meet 500 ms; 600 and 800 do not; TPOT 50 ms meets 60 ms; the failure meets nothing.
    assert m.good == 2
    assert m.goodput == pytest.approx(2 / m.duration_s)
    assert m.slo_attainment == pytest.approx(2 / 5)
    assert m.errors == {"500 boom": 1}
    assert level_metrics(records, parse_slo("tpot=40")).good == 0
    assert level_metrics(records, parse_slo("e2e=600")).good == 2  # E2E 400, 600 (<=), 800, 1000 ms


def test_a_one_token_answer_has_no_tpot_and_cannot_fail_a_tpot_objective():
    record = scripted(0, sent=0.0, first=0.1, every=0.05, tokens=1)
    assert record.tpot is None and record.itl == []
    assert Slo(tpot=0.001).met_by(record)
    assert not Slo(ttft=0.05).met_by(record)


def test_failed_requests_count_as_sent_but_not_measured():
    failed = RequestRecord(index=0, sent_at=0.0, chunk_times=[0.1], done_at=0.2, error="stream cut")
    assert failed.ttft is None and failed.e2e is None and failed.itl == []
    m = level_metrics([failed])
    assert (m.sent, m.completed, m.failed, m.request_throughput) == (1, 0, 1, 0.0)
    assert m.ttft.mean is None and m.ttft.count == 0


def test_slo_text_in_every_accepted_spelling():
    assert parse_slo("ttft=800,tpot=80,e2e=5000") == Slo(0.8, 0.08, 5.0)
    assert parse_slo("ttft:800 e2el:5000") == Slo(ttft=0.8, e2e=5.0)  # vLLM's spelling
    assert parse_slo(None) == Slo() and Slo().empty
    for bad in ("ttft", "ttfb=3", "ttft=-1", "tpot=fast", "ttft=nan", "e2e=inf"):
        with pytest.raises(ConfigError, match="Cannot read the SLO"):
            parse_slo(bad)


@pytest.mark.parametrize("empty", [",,", "", " ", ", ,"])
def test_an_slo_with_no_objective_is_refused(empty: str) -> None:
    with pytest.raises(ConfigError, match="names no objective") as refused:
        parse_slo(empty)
    assert "leave it out" in (refused.value.hint or "")


def test_an_slo_naming_an_objective_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="names ttft twice"):
        parse_slo("ttft=800,ttft=900")


def test_bench_refuses_an_empty_slo_before_anything_starts() -> None:
    from click.testing import CliRunner

    from sandserve.cli.observe import bench

    result = CliRunner().invoke(bench, ["no-such-endpoint", "--slo", ",,"])
    assert result.exit_code == 2, result.output
    assert "names no objective" in result.output and "No endpoint" not in result.output


def test_load_plans_refuse_nonsense():
    with pytest.raises(ConfigError):
        LoadPlan("concurrency", ())
    with pytest.raises(ConfigError):
        LoadPlan("concurrency", (0,))
    with pytest.raises(ConfigError):
        LoadPlan("concurrency", (1.5,))
    assert LoadPlan("rate", (math.inf,)).requests_for(math.inf) == 32
    assert LoadPlan("concurrency", (2, 64)).requests_for(64) == 256
    assert LoadPlan("sweep", sweep_max=16).sweep_levels() == [1, 2, 4, 8, 16]


def reading(
    t: float, running: int, queued: int, prompt: float, cached: float, generated: float
) -> EndpointLoad:
    load = EndpointLoad(endpoint_id="e", url="u", at=t, monotonic=t, ok=True, running=running, queued=queued)
    load.counters = LoadCounters(prompt_tokens=prompt, cached_tokens=cached, generation_tokens=generated)
    return load


def test_the_server_load_is_joined_to_the_level_it_was_sampled_in():
    samples = [
        reading(0.0, 0, 0, 100, 0, 0),  # before the level: gauges not counted
        reading(1.0, 2, 3, 300, 50, 100),
        reading(2.0, 2, 1, 500, 150, 300),
        reading(3.0, 0, 0, 700, 300, 400),  # after the level
    ]
    load = join_load(samples, start=0.5, end=2.5)
    assert load.samples == 2
    assert (load.running_mean, load.running_max, load.queued_mean, load.queued_max) == (2, 2, 2, 3)
    assert load.cache_hit_rate == pytest.approx(300 / 600)  # counters from the first to the last sample
    assert load.server_generation_tokens_per_s == pytest.approx(400 / 3)


def test_a_level_whose_client_cpu_was_saturated_says_so_in_the_report():
    from sandserve.endpoint import Endpoint
    from sandserve.observe.bench import BenchRun
    from sandserve.observe.bench_results import LevelResult
    from sandserve.observe.datasets import random_prompts
    from sandserve.observe.report import markdown

    endpoint = Endpoint(id="e", url="http://127.0.0.1:1", model="m")
    run = BenchRun(endpoint, random_prompts(4, 4), BenchConfig(LoadPlan("concurrency", (1,))))
    busy = LevelResult("concurrency", 1, records=[scripted(0, 0.0, 0.1, 0.01, 3)], client_cpu=0.95)
    calm = LevelResult("concurrency", 2, records=[scripted(1, 0.0, 0.1, 0.01, 3)], client_cpu=0.2)
    run._close(busy, [])
    run._close(calm, [])
    assert busy.warnings and "client CPU 95% of one core" in busy.warnings[0]
    assert calm.warnings == []
    run.result.levels += [busy, calm]
    assert "concurrency=1: client CPU 95% of one core" in markdown(run.result, [])


def test_a_messages_stream_counts_a_prompt_read_whole_from_the_cache() -> None:
    """llama-server's (and Anthropic's) input_tokens leaves out the cached tokens: a prompt read whole from
    the cache says 0 input tokens and N cached ones, which is a prompt of N tokens."""
    from sandserve.observe.agent_stream import read_messages_event

    record = RequestRecord(index=0, sent_at=0.0)
    usage = {"cache_read_input_tokens": 30, "input_tokens": 0, "output_tokens": 0}
    read_messages_event({"type": "message_start", "message": {"usage": usage}}, record, 0.1)
    read_messages_event({"type": "message_delta", "usage": {"output_tokens": 12}}, record, 0.2)
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (30, 30, 12)
