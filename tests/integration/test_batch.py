"""sandserve.batch.runner against a local fault-injecting server: every request ends exactly once in the
output."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultServer

from sandserve.batch.files import JsonlSink, errors_path, summary_path
from sandserve.batch.http import parse_retry_after
from sandserve.batch.prefix import plan_prefix_waves
from sandserve.batch.runner import default_concurrency, run_batch, run_batch_sync, run_requests
from sandserve.batch.types import Backoff, BatchProgress, BatchRequest, BatchResult
from sandserve.endpoint import Endpoint
from sandserve.errors import BatchIncompleteError, BatchInputError, EndpointUnavailableError
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import free_port

FAST = Backoff(base_s=0.001, max_s=0.005)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        yield fault_server


def endpoint_for(url: str, **fields: Any) -> Endpoint:
    return Endpoint(id="test", url=url, model="test-model", **fields)


def request_line(custom_id: str, *, url: str = "/v1/chat/completions", prompt: str | None = None) -> str:
    text = prompt if prompt is not None else f"question {custom_id}"
    if url == "/v1/chat/completions":
        body: dict[str, Any] = {"user": custom_id, "messages": [{"role": "user", "content": text}]}
    elif url == "/v1/completions":
        body = {"user": custom_id, "prompt": text}
    else:
        body = {"rid": custom_id, "text": text}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def write_batch(path: Path, ids: list[str], **options: Any) -> Path:
    path.write_text("".join(request_line(custom_id, **options) + "\n" for custom_id in ids))
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the output must end with a whole line"
    return [json.loads(line) for line in text.splitlines()]


def read_all(out: Path) -> list[dict[str, Any]]:
    """The output's lines and its error file's: every request with a result, each once."""
    errors = errors_path(out)
    return read_output(out) + (read_output(errors) if errors.exists() else [])


def assert_each_once(lines: list[dict[str, Any]], expected_ids: set[str]) -> None:
    counts = Counter(line["custom_id"] for line in lines)
    assert set(counts) == expected_ids
    assert max(counts.values()) == 1, [cid for cid, n in counts.items() if n > 1]


def by_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line for line in lines}


# --- every request ends exactly once ---------------------------------------------------------------------


def test_every_request_ends_exactly_once_through_faults(server: FaultServer, tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(40)]
    server.script("r1", "429", "ok")
    server.script("r2", "500", "503", "ok")
    server.script("r3", "drop", "ok")
    server.script("r4", "malformed", "malformed", "ok")
    server.script("r5", "400")
    server.script("r6", "502", "502", "502", "ok")
    server.script("r7", "malformed", "malformed", "malformed", "ok")
    server.script("r8", "slow", "ok")
    inp = write_batch(tmp_path / "in.jsonl", ids)
    with inp.open("a") as file:
        file.write(request_line("c1", url="/v1/completions") + "\n")
        file.write(request_line("g1", url="/generate") + "\n")
    out = tmp_path / "out.jsonl"
    progress: list[BatchProgress] = []

    summary = run_batch_sync(
        endpoint_for(server.url),
        inp,
        out,
        concurrency=8,
        max_retries=3,
        backoff=FAST,
        on_progress=progress.append,
    )

    lines = read_all(out)
    assert_each_once(lines, {*ids, "c1", "g1"})
    results = by_id(lines)
    failed = {cid for cid, line in results.items() if line["error"] is not None}
    assert failed == {"r5"}
    assert [line["custom_id"] for line in read_output(errors_path(out))] == ["r5"]
    assert server.attempts["r6"] == server.attempts["r7"] == 4  # 1 + max_retries
    assert server.attempts["r1"] == 2 and server.attempts["r2"] == 3 and server.attempts["r4"] == 3
    ok = results["r1"]["response"]
    assert ok["status_code"] == 200 and ok["body"]["choices"][0]["message"]["content"] == "answer to r1"
    assert results["g1"]["response"]["body"]["text"] == "answer to g1"

    assert (summary.requests, summary.succeeded, summary.failed, summary.unfinished) == (42, 41, 1, 0)
    assert summary.retries == 1 + 2 + 1 + 2 + 3 + 3
    assert summary.errors_by_kind == {"http_400": 1}
    bodies = [line["response"]["body"] for line in lines if line["error"] is None]
    assert summary.input_tokens == sum(b.get("usage", b.get("meta_info"))["prompt_tokens"] for b in bodies)
    assert summary.cached_tokens == sum(
        b["meta_info"]["cached_tokens"]
        if "meta_info" in b
        else (b["usage"]["prompt_tokens_details"] or {}).get("cached_tokens", 0)
        for b in bodies
    )
    assert summary.latency_p50_s is not None and summary.latency_p50_s <= summary.latency_p99_s  # type: ignore[operator]
    assert json.loads(summary_path(out).read_text()) == summary.to_dict()
    assert progress[-1].done == progress[-1].total == 42 and progress[-1].in_flight == 0


def test_400_is_not_retried_and_keeps_the_servers_message(server: FaultServer, tmp_path: Path) -> None:
    server.script("bad", "400")
    out = tmp_path / "out.jsonl"
    inp = write_batch(tmp_path / "in.jsonl", ["bad", "good"])
    run_batch_sync(endpoint_for(server.url), inp, out, backoff=FAST)

    assert [line["custom_id"] for line in read_output(out)] == ["good"]
    bad = by_id(read_output(errors_path(out)))["bad"]
    assert server.attempts["bad"] == 1
    assert bad["error"] == {"code": "http_400", "message": "bad request bad"}
    assert bad["response"]["status_code"] == 400


def test_retry_after_is_honoured(server: FaultServer, tmp_path: Path) -> None:
    # Backoff of up to an hour: the run only finishes promptly if the server's Retry-After (0 s) is used.
    server.script("limited", "429", "429", "ok")
    patient = Backoff(base_s=3600, max_s=3600)
    out = tmp_path / "out.jsonl"
    summary = run_batch_sync(
        endpoint_for(server.url), write_batch(tmp_path / "in.jsonl", ["limited"]), out, backoff=patient
    )
    assert server.attempts["limited"] == 3
    assert summary.succeeded == 1 and summary.retries == 2


def test_retry_delay_rules() -> None:
    backoff = Backoff(base_s=1.0, max_s=8.0, max_retry_after_s=60.0)
    assert backoff.delay(5, retry_after=7.0) == 7.0
    assert backoff.delay(0, retry_after=600.0) == 60.0
    assert all(0.0 <= backoff.delay(10) <= 8.0 for _ in range(100))
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now


def test_timed_out_attempt_is_retried(server: FaultServer, tmp_path: Path) -> None:
    server.slow_s = 0.5
    server.script("sleepy", "slow", "ok")
    out = tmp_path / "out.jsonl"
    summary = run_batch_sync(
        endpoint_for(server.url),
        write_batch(tmp_path / "in.jsonl", ["sleepy"]),
        out,
        backoff=FAST,
        request_timeout_s=0.1,
    )
    assert summary.succeeded == 1 and server.attempts["sleepy"] == 2


def test_in_flight_requests_stay_within_concurrency(server: FaultServer, tmp_path: Path) -> None:
    server.default_action = "slow"
    server.slow_s = 0.01
    out = tmp_path / "out.jsonl"
    run_batch_sync(
        endpoint_for(server.url),
        write_batch(tmp_path / "in.jsonl", [f"r{i}" for i in range(60)]),
        out,
        concurrency=5,
    )
    assert 1 < server.max_in_flight <= 5


# --- resume ----------------------------------------------------------------------------------------------

_RUNNER = """
import sys
from sandserve.batch.runner import run_batch_sync
from sandserve.endpoint import Endpoint
run_batch_sync(Endpoint(id="t", url=sys.argv[1], model="m"), sys.argv[2], sys.argv[3], concurrency=4)
"""


def test_killed_run_resumes_without_duplicates_or_losses(server: FaultServer, tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(300)]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    server.default_action = "slow"
    server.slow_s = 0.02
    runner = subprocess.Popen([sys.executable, "-c", _RUNNER, server.url, str(inp), str(out)])
    try:
        while runner.poll() is None and (not out.exists() or out.read_bytes().count(b"\n") < 30):
            time.sleep(0.01)
    finally:
        runner.kill()  # SIGKILL: no cleanup at all
        runner.wait()
    before = read_output(out)
    assert 30 <= len(before) < len(ids), "the runner should have been killed midway"

    server.default_action = "ok"
    summary = run_batch_sync(endpoint_for(server.url), inp, out, backoff=FAST)

    lines = read_output(out)
    assert_each_once(lines, set(ids))
    assert all(line["error"] is None for line in lines)
    assert summary.skipped == len(before) and summary.requests == len(ids) - len(before)
    sent_twice = [cid for cid in ids if server.attempts[cid] > 1]
    assert len(sent_twice) <= 4, "only requests in flight at the kill may be sent again"


def test_cancelled_run_resumes(server: FaultServer, tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(100)]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    server.default_action = "slow"
    server.slow_s = 0.01

    async def run_until_cancelled() -> None:
        task = asyncio.ensure_future(run_batch(endpoint_for(server.url), inp, out, concurrency=4))
        while not out.exists() or out.read_bytes().count(b"\n") < 10:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_until_cancelled())
    assert 10 <= len(read_output(out)) < len(ids)
    server.default_action = "ok"
    run_batch_sync(endpoint_for(server.url), inp, out)
    assert_each_once(read_output(out), set(ids))


def test_partial_last_line_is_repaired(server: FaultServer, tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(10)]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    run_batch_sync(endpoint_for(server.url), write_batch(tmp_path / "first.jsonl", ids[:4]), out)
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"id": "batch_req_x", "custom_id": "r4", "respo')  # torn by a crash

    run_batch_sync(endpoint_for(server.url), inp, out)

    assert out.read_bytes().startswith(whole)
    lines = read_output(out)
    assert_each_once(lines, set(ids))
    assert all(line["error"] is None for line in lines)


def test_finished_are_skipped_and_errors_retried_on_request(server: FaultServer, tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    server.script("b", "400")
    run_batch_sync(endpoint_for(server.url), inp, out)

    again = run_batch_sync(endpoint_for(server.url), inp, out)
    assert again.requests == 0 and again.skipped == 3
    assert sum(server.attempts.values()) == 3

    retried = run_batch_sync(endpoint_for(server.url), inp, out, retry_errors=True)
    assert retried.requests == 1 and retried.succeeded == 1 and retried.skipped == 2
    lines = read_all(out)
    assert_each_once(lines, set(ids))
    assert all(line["error"] is None for line in lines)


# --- bad input -------------------------------------------------------------------------------------------


def test_malformed_input_lines_become_error_lines(server: FaultServer, tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "\n".join(
            [
                request_line("a"),
                "{not json",
                json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
                "",
                json.dumps({"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"}),
                json.dumps({"custom_id": "bad-url", "method": "POST", "url": "/v1/embeddings", "body": {}}),
                "[1, 2]",
                request_line("b"),
            ]
        )
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    summary = run_batch_sync(endpoint_for(server.url), inp, out)

    lines = by_id(read_all(out))
    assert set(lines) == {"a", "b", "line-2", "line-3", "no-body", "bad-url", "line-7"}
    expected = [("line-2", 2), ("line-3", 3), ("no-body", 5), ("bad-url", 6), ("line-7", 7)]
    for custom_id, line_number in expected:
        assert lines[custom_id]["error"]["code"] == "invalid_input"
        assert lines[custom_id]["error"]["message"].startswith(f"line {line_number}")
    assert lines["a"]["error"] is None and lines["b"]["error"] is None
    assert summary.failed == 5 and summary.succeeded == 2


def test_duplicate_custom_ids_stop_the_run_before_sending(server: FaultServer, tmp_path: Path) -> None:
    inp, out = write_batch(tmp_path / "in.jsonl", ["a", "b", "a"]), tmp_path / "out.jsonl"
    with pytest.raises(BatchInputError, match="duplicate custom_id 'a' \\(again on line 3\\)"):
        run_batch_sync(endpoint_for(server.url), inp, out)
    assert not out.exists() and not server.arrivals


def test_missing_input_file_is_a_clear_error(server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"custom_id": "old"}\n')
    with pytest.raises(BatchInputError, match="no such file"):
        run_batch_sync(endpoint_for(server.url), tmp_path / "missing.jsonl", out)
    assert out.read_text() == '{"custom_id": "old"}\n'


# --- the endpoint ----------------------------------------------------------------------------------------


def test_endpoint_down_raises_and_leaves_output_valid(tmp_path: Path) -> None:
    inp, out = write_batch(tmp_path / "in.jsonl", ["a", "b"]), tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "batch_req_1", "custom_id": "a", "response": {}, "error": None}) + "\n")
    before = out.read_bytes()
    with pytest.raises(EndpointUnavailableError, match="sandserve status"):
        run_batch_sync(endpoint_for(f"http://127.0.0.1:{free_port()}"), inp, out, backoff=FAST)
    assert out.read_bytes() == before


def test_endpoint_going_down_midway_stops_the_run(server: FaultServer, tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(20)]
    server.script("r5", "down")
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    with pytest.raises(
        BatchIncompleteError, match=r"14 of 20 requests still have no result: .*no connection"
    ):
        run_batch_sync(endpoint_for(server.url), inp, out, concurrency=1, max_retries=2, backoff=FAST)
    lines = read_all(out)
    assert {line["custom_id"] for line in lines} == {f"r{i}" for i in range(6)}
    assert all(line["error"] is None for line in lines), "a lost connection is never a final result"
    assert json.loads(summary_path(out).read_text())["unfinished"] == 14


def test_server_failing_every_request_stops_the_run_early(server: FaultServer, tmp_path: Path) -> None:
    server.default_action = "500"
    inp, out = write_batch(tmp_path / "in.jsonl", [f"r{i}" for i in range(50)]), tmp_path / "out.jsonl"
    with pytest.raises(BatchIncompleteError, match=r"50 of 50 requests still have no result: .*all got no"):
        run_batch_sync(endpoint_for(server.url), inp, out, concurrency=2, max_retries=1, backoff=FAST)
    assert read_all(out) == [], "a 5xx after every retry is not a final result"
    assert 10 <= sum(server.attempts.values()) // 2 < 50, "the run stops early"
    server.default_action = "ok"
    assert run_batch_sync(endpoint_for(server.url), inp, out, backoff=FAST).succeeded == 50


def test_auth_headers_are_sent_and_refusal_is_reported(tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", ["a"])
    with FaultServer(token="secret") as server:
        with pytest.raises(EndpointUnavailableError, match="credentials"):
            run_batch_sync(endpoint_for(server.url), inp, tmp_path / "refused.jsonl", backoff=FAST)
        summary = run_batch_sync(
            endpoint_for(server.url, headers={PREVIEW_TOKEN_HEADER: "secret"}), inp, tmp_path / "out.jsonl"
        )
    assert summary.succeeded == 1


def test_default_concurrency_follows_server_capacity() -> None:
    assert default_concurrency(endpoint_for("http://x")) == 64
    assert default_concurrency(endpoint_for("http://x", info={"max_running_requests": 48})) == 96
    assert default_concurrency(endpoint_for("http://x", info={"max_running_requests": 512})) == 640
    assert default_concurrency(endpoint_for("http://x", info={"max_running_requests": None})) == 64


# --- prefix order ----------------------------------------------------------------------------------------


def _grouped_batch(path: Path) -> dict[str, str]:
    """Three shared-prefix groups (a, b, c) and a loner (d), interleaved; returns custom_id -> group."""
    shared = {group: f"{group} " * 1500 for group in "abc"}
    ids = ["a0", "b0", "c0", "a1", "b1", "d0", "a2", "c1", "a3", "b2", "c2"]
    path.write_text(
        "".join(
            request_line(cid, prompt=shared.get(cid[0], "loner ") + f"question {cid}") + "\n" for cid in ids
        )
    )
    return {cid: cid[0] for cid in ids}


@pytest.mark.parametrize("concurrency", [1, 8])
def test_prefix_order_sends_one_of_each_group_first(
    server: FaultServer, tmp_path: Path, concurrency: int
) -> None:
    group_of = _grouped_batch(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    run_batch_sync(
        endpoint_for(server.url), tmp_path / "in.jsonl", out, order="prefix", concurrency=concurrency
    )

    assert_each_once(read_output(out), set(group_of))
    groups = [group_of[key] for key in server.arrivals]
    assert sorted(groups[:4]) == ["a", "b", "c", "d"], "one of each group, before any other request"
    if concurrency == 1:  # then arrival order is sending order: the rest come group by group
        rest = groups[4:]
        runs = [group for i, group in enumerate(rest) if i == 0 or rest[i - 1] != group]
        assert len(runs) == len(set(runs)) == 3


def test_prefix_waves_fit_the_kv_pool() -> None:
    requests = [
        BatchRequest(f"{g}{i}", {"messages": [{"role": "user", "content": g * 4000 + str(i)}]})
        for g in "abcd"
        for i in range(3)
    ]
    assert [len(wave) for wave in plan_prefix_waves(requests)] == [4, 8]
    # A pool of ~2,900 tokens holds the prefixes of two groups at a time.
    waves = plan_prefix_waves(requests, kv_pool_tokens=2900)
    assert [len(wave) for wave in waves] == [2, 4, 2, 4]
    assert {r.custom_id[0] for r in waves[0]} == {r.custom_id[0] for r in waves[1]}


def test_prefix_order_reads_the_kv_pool_that_boot_records(server: FaultServer, tmp_path: Path) -> None:
    _grouped_batch(tmp_path / "in.jsonl")
    endpoint = endpoint_for(server.url, info={"kv_pool_tokens": 1000})  # room for one 3,000-character prefix
    run_batch_sync(endpoint, tmp_path / "in.jsonl", tmp_path / "out.jsonl", order="prefix", concurrency=1)
    groups = [key[0] for key in server.arrivals]
    assert groups == sorted(groups), "one group at a time: its leader, then the rest of it"


# --- requests built in code ------------------------------------------------------------------------------


def test_run_requests_streams_a_generator_into_any_sink(server: FaultServer, tmp_path: Path) -> None:
    server.script("q3", "503", "ok")
    requests = (
        BatchRequest(f"q{i}", {"user": f"q{i}", "messages": [{"role": "user", "content": "hi"}]})
        for i in range(20)
    )
    results: list[BatchResult] = []
    summary = asyncio.run(
        run_requests(endpoint_for(server.url), requests, results.append, concurrency=3, backoff=FAST)
    )
    assert sorted(r.custom_id for r in results) == sorted(f"q{i}" for i in range(20))
    assert all(r.ok and r.usage.prompt_tokens > 0 for r in results)
    assert summary.retries == 1 and summary.succeeded == 20

    out = tmp_path / "own.jsonl"
    with JsonlSink(out) as sink:
        asyncio.run(
            run_requests(endpoint_for(server.url), [BatchRequest("x", {"user": "x", "messages": []})], sink)
        )
    assert read_output(out)[0]["custom_id"] == "x"
