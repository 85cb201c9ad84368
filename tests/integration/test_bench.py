"""`sandserve bench` end to end: against the scripted server (known delays), interrupted with Ctrl-C, and a
4-level concurrency sweep against the real local model."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, sandserve_command

from sandserve.endpoint import Endpoint
from sandserve.observe.bench import BenchConfig, LoadPlan, run_bench_sync
from sandserve.observe.datasets import random_prompts
from sandserve.observe.metrics import Slo, level_metrics
from sandserve.observe.report import write_report
from sandserve.observe.scripted import PROMPT_TOKENS, Script, ScriptedServer


def scripted_endpoint(server: ScriptedServer) -> Endpoint:
    return Endpoint(
        id="scripted", url=server.url, model="scripted", engine="llamacpp", provider="local", auth="public"
    )


def test_metrics_against_a_server_with_known_delays(tmp_path: Path):
    tokens = 6
    with ScriptedServer(Script(first_token_ms=40, token_ms=15, slots=2)) as server:
        config = BenchConfig(
            LoadPlan("concurrency", (1, 4), requests_per_level=12),
            slo=Slo(ttft=0.2, tpot=0.05),
            sample_interval_s=0.02,
        )
        result = run_bench_sync(scripted_endpoint(server), random_prompts(8, tokens), config).result
    assert [level.label for level in result.levels] == ["concurrency=1", "concurrency=4"]
    for level in result.levels:
        m = level.metrics
        assert m is not None and (m.sent, m.completed, m.failed) == (12, 12, 0)
        records = level.records
        # The server's usage is what counts: every request streamed `tokens` chunks and said so.
        assert all(len(r.chunk_times) == tokens and r.completion_tokens == tokens for r in records)
        assert m.output_tokens == 12 * tokens and m.input_tokens == 12 * PROMPT_TOKENS
        # Every figure is the definition applied to the recorded timestamps, nothing else.
        ttft = [r.chunk_times[0] - r.sent_at for r in records]
        e2e = [r.done_at - r.sent_at for r in records]
        tpot = [(e - t) / (tokens - 1) for e, t in zip(e2e, ttft, strict=True)]
        itl = [b - a for r in records for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
        duration = max(r.done_at for r in records) - min(r.sent_at for r in records)
        assert m.ttft.mean == pytest.approx(1000 * np.mean(ttft))
        assert m.ttft.p99 == pytest.approx(1000 * np.percentile(ttft, 99))
        assert m.e2e.median == pytest.approx(1000 * np.median(e2e))
        assert m.tpot.mean == pytest.approx(1000 * np.mean(tpot))
        assert m.itl.p90 == pytest.approx(1000 * np.percentile(itl, 90)) and m.itl.count == 12 * (tokens - 1)
        assert m.request_throughput == pytest.approx(12 / duration)
        good = sum(1 for t, p in zip(ttft, tpot, strict=True) if t <= 0.2 and p <= 0.05)
        assert m.good == good and m.goodput == pytest.approx(good / duration)
        assert level_metrics(records, config.slo) == m
    # Two slots, four at once: the server's own queue is joined to the level that caused it.
    one, four = (level.load for level in result.levels)
    assert one is not None and four is not None
    assert one.queued_max == 0 and one.running_max == 1
    assert four.queued_max and four.queued_max > 0 and four.running_max == 2
    written = write_report(result, tmp_path / "out")
    data = json.loads(written["json"].read_text())
    assert [level["label"] for level in data["levels"]] == ["concurrency=1", "concurrency=4"]
    assert len(data["levels"][1]["requests"]) == 12
    assert {"latency_vs_throughput", "ttft_itl_percentiles", "goodput"} <= set(written)
    assert "| concurrency=4 |" in written["report"].read_text()


def test_ctrl_c_writes_what_was_measured(tmp_path: Path):
    out = tmp_path / "bench"
    with ScriptedServer(Script(first_token_ms=20, token_ms=40, slots=1)) as server:
        args = ["--concurrency", "1,2", "--requests", "6", "--output-len", "20", "--input-len", "4"]
        process = subprocess.Popen(
            [*sandserve_command(), "bench", *args, "--warmup", "0", "--output", str(out)],
            env={**os.environ, "ENDPOINT": server.url, "MODEL": "scripted"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The first level ends (its line is printed) and the second has started: interrupt it.
            assert process.stderr is not None
            for line in process.stderr:
                if "concurrency=1: 6/6" in line:
                    break
            time.sleep(1.0)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130, stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["interrupted"] is True
    first, second = data["levels"]
    assert first["metrics"]["completed"] == 6 and not first["interrupted"]
    assert second["interrupted"] is True
    assert second["metrics"]["completed"] < 6 and second["unfinished"] >= 1  # cut off while it ran
    assert len(second["requests"]) == second["metrics"]["sent"]  # what was measured, and only that
    assert "Interrupted" in (out / "report.md").read_text()
    # The table of what was measured, into a pipe; then what was not, and the command that measures it.
    header, *rows = stdout.splitlines()[:3]
    assert header.startswith("level\tdone") and [row.split("\t")[0] for row in rows] == [
        "concurrency=1",
        "concurrency=2 (cut)",
    ]
    told = " ".join(stderr.split())
    assert "measured: concurrency=1" in told and "cut short: concurrency=2" in told
    assert "not measured: concurrency=2" in told
    rest = shlex.split(told.split("to measure the rest: ")[1])
    assert rest[rest.index("bench") + 1 :] == [
        *args[2:], "--warmup", "0", "--concurrency", "2", "--output", f"{out}-rest"
    ]  # fmt: skip


@pytest.mark.usefixtures("llama_server", "tiny_model")
def test_a_concurrency_sweep_against_the_real_model(local_endpoint: Endpoint, tmp_path: Path):
    """Four levels on llama-server with its four slots (on 2 cores): eight at once, four wait in the
    endpoint's queue, so TTFT grows with load and the queue depth the server reports is joined to the levels
    that caused it. Eight requests a level, of 512 tokens each: at eight at once, four wait the whole time the
    first four take to answer, long enough for the samples to see them. The tiny model decodes thousands of
    tokens a second on two idle cores: with 16 requests of 192 tokens the queue came and went in waves of
    0.15 s, and four samples of a level all missed it."""
    config = BenchConfig(LoadPlan("concurrency", (1, 2, 4, 8), requests_per_level=8), sample_interval_s=0.05)
    result = run_bench_sync(local_endpoint, random_prompts(32, 512), config).result
    metrics = [level.metrics for level in result.levels]
    assert all(m is not None and m.completed == 8 for m in metrics)
    ttft = [m.ttft.median for m in metrics if m]
    assert ttft[3] > ttft[0], ttft  # eight at once on four slots: four wait their turn
    loads = [level.load for level in result.levels]
    assert loads[0] is not None and loads[0].queued_max == 0
    assert loads[3] is not None and loads[3].queued_max and loads[3].queued_max > 0
    written = write_report(result, tmp_path / "sweep")
    report = written["report"].read_text()
    assert "queue mean/max" in report and "concurrency=8" in report
    for name in ("latency_vs_throughput", "ttft_itl_percentiles", "goodput"):
        assert written[name].stat().st_size > 10_000


def test_poisson_rates_with_a_cap_on_requests_in_flight():
    with ScriptedServer(Script(first_token_ms=30, token_ms=10)) as server:
        plan = LoadPlan("rate", (20.0, float("inf")), requests_per_level=12, max_concurrency=2)
        config = BenchConfig(plan, warmup=0, sample_interval_s=0.01)
        result = run_bench_sync(scripted_endpoint(server), random_prompts(4, 5), config).result
    assert [level.label for level in result.levels] == ["rate=20/s", "rate=inf"]
    for level in result.levels:
        assert level.metrics is not None and level.metrics.completed == 12
        # The server's own count of requests it was generating never passed the cap.
        assert level.load is not None and level.load.running_max is not None and level.load.running_max <= 2
    assert result.levels[1].load.running_max == 2  # all at once, so the cap was reached


def test_a_sweep_stops_where_throughput_stops_growing():
    # Two slots, each request 40 + 4 x 20 ms: one and two at once scale, four at once cannot.
    with ScriptedServer(Script(first_token_ms=40, token_ms=20, slots=2)) as server:
        plan = LoadPlan("sweep", requests_per_level=16, sweep_max=64)
        result = run_bench_sync(
            scripted_endpoint(server), random_prompts(4, 5), BenchConfig(plan, warmup=0)
        ).result
    assert [level.label for level in result.levels] == ["concurrency=1", "concurrency=2", "concurrency=4"]
    assert result.levels[-1].saturated and not result.levels[1].saturated
    assert "saturated" in result.levels[-1].warnings[0]


def test_bad_bench_arguments_fail_clearly():
    cases = [
        (["--concurrency", "0"], "must be > 0"),
        (["--concurrency", "1.5"], "whole number"),
        (["--rate", "2", "--sweep"], "Give one of"),
        (["--slo", "ttft=fast"], "Cannot read the SLO"),
        (["--dataset", "jsonl"], "needs --prompts"),
        (["--concurrency", "a,b"], "is not a number"),
    ]
    for args, message in cases:
        result = run_cli("bench", *args, env={"ENDPOINT": "http://127.0.0.1:9"})
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_bench_against_nothing_says_the_endpoint_is_unavailable(tmp_path: Path):
    with ScriptedServer() as server:
        url = server.url
    result = run_cli("bench", "--output", str(tmp_path / "out"), env={"ENDPOINT": url, "MODEL": "m"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert url in result.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_client_ceiling_prints_both_clients():
    result = run_cli("bench", "--client-ceiling", "--requests", "400", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "sandserve bench (aiohttp, streaming)" in result.stdout
    assert "AsyncOpenAI" in result.stdout and "CPU-bound ceiling" in result.stdout


def test_bench_on_sglang_shapes_counts_the_servers_tokens_not_its_chunks():
    from standins.sglang_server import SGLangStandin

    with SGLangStandin(api_key="sk-b", enable_metrics=True, reasoning_parser="gpt-oss") as server:
        endpoint = Endpoint(id="sgl", url=server.url, model="gpt-oss-20b", api_key="sk-b")
        plan = LoadPlan("concurrency", (2,), requests_per_level=6)
        result = run_bench_sync(
            endpoint, random_prompts(10, 16), BenchConfig(plan, sample_interval_s=0.02)
        ).result
    [level] = result.levels
    assert level.metrics is not None and level.metrics.completed == 6
    for record in level.records:
        # Reasoning and answer chunks both count as text; tokens come from usage (16 each, ignore_eos).
        assert record.completion_tokens == 16 and 1 < len(record.chunk_times) < 16
        assert record.tpot == (record.e2e - record.ttft) / 15
    assert level.metrics.output_tokens == 96
    assert level.load is not None and not level.load.source_errors


@pytest.mark.usefixtures("llama_server", "tiny_model")
def test_bench_on_the_classification_corpus(local_endpoint: Endpoint, tmp_path: Path):
    import random

    from sandserve.workloads.corpus import BOOKS

    books = tmp_path / "books"
    books.mkdir()
    rng = random.Random(0)
    lines = [
        " ".join(rng.choice(["the", "garden", "said", "night", "sea"]) for _ in range(12))
        for _ in range(2000)
    ]
    text = "\n".join(["*** START OF THE PROJECT GUTENBERG EBOOK ***", *lines, "*** END OF IT ***"])
    (books / f"pg{BOOKS['Poe']}.txt").write_text(text)
    out = tmp_path / "out"
    result = run_cli(
        "bench", local_endpoint.id, "--dataset", "classify", "--books", "Poe", "--corpus-dir", str(books),
        "--concurrency", "2", "--requests", "4", "--output-len", "16", "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["dataset"].startswith("classification corpus")
    [level] = data["levels"]
    assert level["metrics"]["completed"] == 4
    # 12,000-character passages: thousands of prompt tokens each, as the server counted them.
    assert all(r["prompt_tokens"] > 1000 for r in level["requests"])
