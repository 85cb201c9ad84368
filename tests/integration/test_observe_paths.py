"""top and bench wherever an endpoint lives: during a batch on the real local engine, through every auth mode
of the Daytona stand-in serving SGLang (its preview proxy keeps the activity clock that auto-stop reads), and
through a fleet's gateway (the real sglang-router)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import run_cli, sandserve_command, sglang_daytona_standin
from standins.daytona_api import DaytonaStandin

from sandserve.endpoint import Endpoint
from sandserve.observe.bench import BenchConfig, LoadPlan, run_bench_sync
from sandserve.observe.bench_results import BenchResult
from sandserve.observe.datasets import random_prompts
from sandserve.observe.loads import read_loads
from sandserve.observe.report import write_report
from sandserve.observe.top import load_endpoints_for, snapshot_once, targets_for
from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import free_port
from sandserve.serve import lifecycle
from sandserve.serve.resolve import resolve_spec

pytestmark = pytest.mark.usefixtures("llama_server", "tiny_model")


def short_bench(endpoint: Endpoint, load_endpoints: list[Endpoint] | None = None) -> BenchResult:
    plan = LoadPlan("concurrency", (2,), requests_per_level=4)
    config = BenchConfig(plan, warmup=1, sample_interval_s=0.05)
    result = run_bench_sync(endpoint, random_prompts(8, 8), config, load_endpoints=load_endpoints)
    [level] = result.result.levels
    assert level.metrics is not None and level.metrics.completed == 4, level.metrics
    assert level.load is not None and not level.load.source_errors, level.load
    return result.result


def test_top_once_json_during_a_batch_shows_the_work(local_endpoint: Endpoint, tmp_path: Path):
    lines = [
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": local_endpoint.model,
                    "messages": [{"role": "user", "content": f"Story number {i}"}],
                    "max_tokens": 3000,
                    "ignore_eos": True,
                },
            }
        )
        for i in range(10)
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    files = [str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")]
    batch = subprocess.Popen(
        [*sandserve_command(), "batch", *files, "--endpoint", local_endpoint.id, "--concurrency", "6"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The batch is stopped as soon as a reading shows its work: 10 x 3,000 tokens keep it going until then,
    # whatever the machine's speed (it is never meant to finish).
    busiest = 0
    try:
        while batch.poll() is None and busiest == 0:
            result = run_cli("top", local_endpoint.id, "--once", "--json")
            assert result.returncode == 0, result.stderr
            [row] = json.loads(result.stdout)["rows"]
            assert row["id"] == local_endpoint.id and row["ok"], row
            if batch.poll() is None:  # a reading taken while the batch still ran
                busiest = max(busiest, (row["running"] or 0) + (row["queued"] or 0))
        assert batch.poll() is None, "the batch ended before any reading"
    finally:
        if batch.poll() is None:
            batch.kill()
        batch.wait()
    assert busiest > 0


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    with sglang_daytona_standin() as api:
        monkeypatch.setenv("DAYTONA_API_KEY", api.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", api.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.2)
        yield api


@pytest.mark.parametrize("auth", ["token", "signed", "key", "public"])
def test_top_and_bench_through_every_daytona_auth_mode(daytona: DaytonaStandin, auth: str, tmp_path: Path):
    endpoint = lifecycle.up(
        resolve_spec("qwen3-coder-30b", provider="daytona", auth=auth, port=free_port(), boot_timeout=60)
    )
    assert endpoint.auth == auth and endpoint.sandbox_id
    sandbox = daytona.sandboxes[endpoint.sandbox_id]

    sandbox.last_activity = 0.0
    [load] = read_loads([endpoint])
    assert load.ok and load.sources == ("/v1/loads", "/metrics"), load  # SGLang's own load reports
    [row] = [r for r in snapshot_once_rows(endpoint.id)]
    assert row.ok and row.running == 0 and row.age_s is not None
    assert sandbox.last_activity == 0.0  # watching does not keep the sandbox awake

    result = short_bench(endpoint)
    assert sandbox.last_activity > 0.0  # real traffic does (so the check above can fail)

    # No credential reaches a report or the screen: not the token, not the key, not a signed URL.
    written = write_report(result, tmp_path / "report")
    top_json = run_cli("top", endpoint.id, "--once", "--json")
    assert top_json.returncode == 0, top_json.stderr
    token = endpoint.headers.get(PREVIEW_TOKEN_HEADER)
    secrets = [s for s in (token, endpoint.api_key) if s]
    if auth == "signed":
        secrets.append(endpoint.url)
    assert secrets or auth == "public"
    outputs = {"bench.json": written["json"], "report.md": written["report"]}
    texts = {name: path.read_text() for name, path in outputs.items()} | {"top": top_json.stdout}
    for name, text in texts.items():
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, (name, leaked)


def snapshot_once_rows(ref: str) -> list:
    import asyncio

    return asyncio.run(snapshot_once(targets_for(ref), interval=0.2)).rows


def test_top_and_bench_through_a_fleet_gateway():
    from sandserve.fleet import fleet_down, fleet_up

    fleet = fleet_up(resolve_spec("tiny", provider="local"), 2, "round_robin")
    try:
        rows = snapshot_once_rows(fleet.id)
        assert [r.role for r in rows] == ["gateway", "worker", "worker"]
        gateway, *workers = rows
        assert gateway.id == fleet.id and gateway.workers_healthy == "2/2"
        assert {w.id for w in workers} == {m.endpoint_id for m in fleet.members}
        assert all(w.ok and w.gateway_healthy is True and w.fleet == fleet.id for w in workers), workers
        # The gateway reports no engine load: the benchmark samples the workers' and adds them up.
        workers_endpoints = load_endpoints_for(fleet.id)
        assert workers_endpoints is not None and len(workers_endpoints) == 2
        short_bench(fleet.endpoint, workers_endpoints)
        # The gateway spread the benchmark over both workers: each engine generated tokens.
        for member in fleet.members:
            [load] = read_loads([worker_endpoint(member.endpoint_id)])
            assert load.counters.generation_tokens and load.counters.generation_tokens > 0
        # The gateway's own metrics: what it routed and how it answered.
        gateway = snapshot_once_rows(fleet.id)[0]
        assert gateway.error_responses == 0 and gateway.workers_healthy == "2/2"
        listed = httpx.get(fleet.url + "/workers", headers=fleet.endpoint.request_headers(), timeout=10)
        assert listed.status_code == 200
        result = run_cli("top", fleet.id, "--once", "--json")
        assert result.returncode == 0, result.stderr
        assert [r["role"] for r in json.loads(result.stdout)["rows"]] == ["gateway", "worker", "worker"]
    finally:
        fleet_down(fleet.id)


def worker_endpoint(endpoint_id: str) -> Endpoint:
    from sandserve.serve.ledger import Registry

    endpoint = Registry().get(endpoint_id).endpoint
    assert endpoint is not None
    return endpoint


def test_live_top_refreshes_until_ctrl_c(local_endpoint: Endpoint):
    import signal
    import time

    process = subprocess.Popen(
        [*sandserve_command(), "top", local_endpoint.id, "--interval", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert local_endpoint.id in stdout and "Traceback" not in stderr
    # Into a pipe: one reading per refresh, each under its header line.
    readings = [block.splitlines() for block in stdout.strip().split("\n\n")]
    assert len(readings) >= 2 and all(
        lines[0].startswith("id\tfleet\trole\tstate\trun") for lines in readings
    )
    assert all(
        lines[1].split("\t")[:4] == [local_endpoint.id, "-", "endpoint", "ready"] for lines in readings
    )
