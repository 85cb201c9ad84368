"""Priority end to end on real components: the adapter's two llama-servers (the people's and the batch's) and
their admission queues; SGLang's stand-in and the gateway started as sandserve starts them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from conftest import run_cli
from polling import poll_until
from standins.sglang_server import SGLangStandin, parse_args

from sandserve.batch import BatchRequest, BatchResult, run_requests
from sandserve.endpoint import Endpoint
from sandserve.engines import get_engine
from sandserve.engines.batch_server import BatchServer
from sandserve.engines.lanes import Lanes
from sandserve.engines.load_formats import parse_slots
from sandserve.engines.priority import Priority, first_tokens_above, waiting_by_priority
from sandserve.fleet.gateway import gateway_launch
from sandserve.observe.prometheus import parse_metrics, total
from sandserve.providers.local import free_port, live_group_members
from sandserve.serve.ledger import Registry
from sandserve.serve.resolve import resolve_spec
from sandserve.spec import ProviderName

#: Only against a hang (never a measured time): a wait that never ends fails the test instead.
HANG_GUARD_S = 120.0
PROMPT = [{"role": "user", "content": "Tell me a long story."}]


async def _stream(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    max_tokens: int,
    events: dict[str, float],
    name: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    body = {
        "model": endpoint.model,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "ignore_eos": True,  # every request generates exactly max_tokens: its slot is held as long as asked
        "stream": True,
        **(extra or {}),
    }
    async with session.post(f"{endpoint.base_url}/chat/completions", json=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        async for line in answer.content:
            if line.startswith(b"data: {") and f"{name} first" not in events:
                events[f"{name} first"] = time.monotonic()
        events[f"{name} done"] = time.monotonic()


async def _waiting(session: aiohttp.ClientSession, endpoint: Endpoint) -> dict[int, int]:
    async with session.get(f"{endpoint.url}/metrics") as answer:
        return waiting_by_priority(await answer.text()) or {}


async def _interactive_while_a_batch_fills_every_slot(endpoint: Endpoint, slots: int) -> dict[str, float]:
    events: dict[str, float] = {}
    async with aiohttp.ClientSession(headers=endpoint.request_headers()) as session:
        # The batch: `slots` long requests hold every slot of the batch's llama-server (long enough to
        # outlast the test on a loaded machine: they are cancelled at its end); `slots` more wait behind
        # them. One half says its priority as the body does (SGLang's integer), the other half as
        # the gateway's header does.
        low_body = {"priority": -1}
        low_header = {"x-smg-priority": "bulk"}
        running = [_stream(session, endpoint, 6000, events, f"running{i}", low_body) for i in range(slots)]
        queued = [
            _stream(session, endpoint, 16, events, f"queued{i}", None, low_header) for i in range(slots)
        ]
        tasks = [asyncio.ensure_future(c) for c in running]

        async def every_slot_busy() -> None:
            while sum(1 for key in events if key.endswith("first")) < slots:
                await asyncio.sleep(0.01)

        async def batch_waiting() -> None:
            while (await _waiting(session, endpoint)).get(-1, 0) < slots:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(every_slot_busy(), HANG_GUARD_S)
        tasks += [asyncio.ensure_future(c) for c in queued]
        await asyncio.wait_for(batch_waiting(), HANG_GUARD_S)
        # A person's request: no priority at all (normal).
        await _stream(session, endpoint, 8, events, "interactive")
        events["queued started by then"] = sum(1 for i in range(slots) if f"queued{i} first" in events)
        events["running done by then"] = sum(1 for i in range(slots) if f"running{i} done" in events)
        for task in tasks:  # the rest of the batch is not needed: closing its streams frees the slots
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return events


def test_an_interactive_request_starts_before_the_batch_requests_queued_ahead_of_it(local_endpoint: Endpoint):
    slots = int(local_endpoint.info.get("max_running_requests") or 0)
    assert slots >= 2, local_endpoint.info
    events = asyncio.run(_interactive_while_a_batch_fills_every_slot(local_endpoint, slots))
    # Sent last, it was answered before any batch request that was waiting when it came had started, and
    # it waited for no batch request to end: the batch's slots are another llama-server's.
    assert events["queued started by then"] == 0
    assert events["running done by then"] == 0


async def _slots(session: aiohttp.ClientSession, endpoint: Endpoint) -> list[dict[str, Any]]:
    async with session.get(f"{endpoint.url}/slots") as answer:
        slots = await answer.json()
    assert isinstance(slots, list), slots
    return slots


def _busy(slots: list[dict[str, Any]], ids: range) -> int:
    return int(parse_slots([slot for slot in slots if slot["id"] in ids]).running or 0)


async def _person_beside_the_batch(endpoint: Endpoint, slots: int) -> dict[str, Any]:
    adapter = Registry().get(endpoint.id).sandbox.pid
    seen: dict[str, Any] = {"before the batch": set(live_group_members(adapter)) - {adapter}}
    requests = [
        BatchRequest(f"b{i}", {"messages": PROMPT, "max_tokens": 1200, "ignore_eos": True}) for i in range(2)
    ]
    results: list[BatchResult] = []
    people, batch = range(slots), range(slots, 2 * slots)
    async with aiohttp.ClientSession(headers=endpoint.request_headers()) as session:
        running = asyncio.ensure_future(run_requests(endpoint, requests, results.append, concurrency=2))

        async def batch_computing() -> None:
            while len(listed := await _slots(session, endpoint)) < 2 * slots or _busy(listed, batch) < 2:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(batch_computing(), HANG_GUARD_S)
        seen["with the batch"] = set(live_group_members(adapter)) - {adapter}
        events: dict[str, float] = {}
        # Long enough for the watcher below to read /slots while it streams, on a loaded machine too.
        person = asyncio.ensure_future(_stream(session, endpoint, 2000, events, "person"))
        seen["people's slots busy while the person streamed"] = set()

        async def watch() -> None:
            while not person.done():
                if "person first" in events and "person done" not in events:
                    listed = await _slots(session, endpoint)
                    seen["people's slots busy while the person streamed"].add(_busy(listed, people))
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(person, watch()), HANG_GUARD_S)
        seen["summary"] = await asyncio.wait_for(running, HANG_GUARD_S)
    seen["results"] = results
    return seen


def test_batch_work_goes_to_a_second_llama_server_and_people_to_the_first(
    local_endpoint: Endpoint,
):
    """The first low-priority request starts the batch's llama-server: the adapter's child, its slots listed
    on /slots after the people's; a person's request is computed in the people's slots while the batch
    keeps its own, and the batch's answers come whole, none retried. (Its niceness: test_local_lifecycle.)"""
    slots = int(local_endpoint.info.get("max_running_requests") or 0)
    seen = asyncio.run(_person_beside_the_batch(local_endpoint, slots))
    [people_server] = seen["before the batch"]
    assert len(seen["with the batch"] - {people_server}) == 1
    assert max(seen["people's slots busy while the person streamed"]) == 1, seen
    summary, results = seen["summary"], seen["results"]
    assert summary.complete and summary.retries == 0
    assert sorted(r.custom_id for r in results) == ["b0", "b1"]
    for result in results:
        assert result.ok and result.attempts == 1, result
        assert result.usage.completion_tokens == 1200
        [choice] = result.body["choices"]
        assert choice["finish_reason"] == "length" and choice["message"]["role"] == "assistant"


def test_the_endpoints_metrics_count_both_llama_servers(local_endpoint: Endpoint):
    """Tokens generated by the people's llama-server and the batch's add up on the endpoint's /metrics."""

    def generated() -> float:
        metrics = httpx.get(f"{local_endpoint.url}/metrics", headers=local_endpoint.request_headers()).text
        return total(parse_metrics(metrics), "llamacpp:tokens_predicted_total")

    body = {"model": local_endpoint.model, "messages": PROMPT, "max_tokens": 5, "ignore_eos": True}
    before = generated()
    for priority in (0, -1):
        answer = httpx.post(
            f"{local_endpoint.base_url}/chat/completions",
            headers=local_endpoint.request_headers(),
            json={**body, "priority": priority},
            timeout=HANG_GUARD_S,
        )
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 5
    assert generated() - before == 10


LOW_PRIORITY_REQUESTS = {
    "/v1/chat/completions": {"messages": PROMPT, "max_tokens": 3, "ignore_eos": True, "priority": -1},
    "/v1/completions": {"prompt": "Once upon a time", "max_tokens": 3, "ignore_eos": True, "priority": -1},
    "/generate": {
        "text": "Once",
        "sampling_params": {"max_new_tokens": 3, "ignore_eos": True},
        "priority": -1,
    },
}


@pytest.mark.parametrize("route", sorted(LOW_PRIORITY_REQUESTS))
def test_every_generation_route_sends_low_priority_work_to_the_batchs_server(local_endpoint: Endpoint, route):
    """Whatever route it comes by, a low-priority request is served in one of the batch's slots (listed
    after the people's on /slots, each with the last request it served), and in none of the people's."""
    slots = int(local_endpoint.info.get("max_running_requests") or 0)
    body = {"model": local_endpoint.model, **LOW_PRIORITY_REQUESTS[route]}
    answer = httpx.post(
        local_endpoint.url + route, json=body, headers=local_endpoint.request_headers(), timeout=HANG_GUARD_S
    )
    assert answer.status_code == 200, answer.text
    listed = httpx.get(f"{local_endpoint.url}/slots", headers=local_endpoint.request_headers()).json()
    assert len(listed) == 2 * slots
    served = {slot["id"]: slot["params"]["n_predict"] for slot in listed if "params" in slot}
    assert [n for slot, n in served.items() if slot >= slots] == [3], served
    assert 3 not in [n for slot, n in served.items() if slot < slots], served  # (the readiness probe's: 1)


def test_batch_work_goes_to_the_peoples_server_when_the_batchs_does_not_start(capfd):
    """A command that exits at once (``false``, given the host and port llama-server would get): the
    batch's server is not up, so a low-priority request waits in the people's queue and goes to their
    server; the adapter's log says so; the next request does not try again at once."""
    false = shutil.which("false")
    assert false is not None

    async def scenario() -> tuple[bool, bool, bool]:
        lanes = Lanes(2, BatchServer([false], {}))
        queue, upstream = await lanes.lane_for(-1)
        again = await lanes.lane_for(-1)
        normal = await lanes.lane_for(0)
        return (
            queue is lanes.people and upstream is None,
            again == (lanes.people, None),
            normal == (lanes.people, None),
        )

    assert asyncio.run(scenario()) == (True, True, True)
    log = capfd.readouterr().err
    assert log.count("the batch's llama-server did not start") == 1, log


def test_the_adapter_reports_how_long_streamed_requests_waited_for_their_first_token(
    local_endpoint: Endpoint,
):
    """What the batch runner reads to tell whether people are slowed (batch/pace.py): a streamed request's
    wait from its arrival to its first token, by priority; an answer asked for whole is not counted."""

    def reported(priority: Priority) -> tuple[float, int]:
        metrics = httpx.get(f"{local_endpoint.url}/metrics", headers=local_endpoint.request_headers()).text
        totals = first_tokens_above(metrics, priority)
        assert totals is not None, metrics
        return totals

    async def person_and_batch() -> dict[str, float]:
        events: dict[str, float] = {}
        async with aiohttp.ClientSession(headers=local_endpoint.request_headers()) as session:
            sent = time.monotonic()
            await _stream(session, local_endpoint, 4, events, "person")
            events["person first"] -= sent
            await _stream(session, local_endpoint, 4, events, "batch", {"priority": -1})
        return events

    people_before, everyone_before = reported("low"), reported("high")
    whole = httpx.post(
        f"{local_endpoint.base_url}/chat/completions",
        headers=local_endpoint.request_headers(),
        json={"model": local_endpoint.model, "messages": PROMPT, "max_tokens": 2},
        timeout=HANG_GUARD_S,
    )
    assert whole.status_code == 200 and reported("low") == people_before
    events = asyncio.run(asyncio.wait_for(person_and_batch(), HANG_GUARD_S))
    people_seconds, people = reported("low")
    assert people == people_before[1] + 1  # the person's, not the batch request's
    assert 0 < people_seconds - people_before[0] <= events["person first"]
    assert reported("high") == everyone_before  # nothing above normal was sent


# --- SGLang (its stand-in, started with the engine's own flags) ----------------------------------------


def _sglang_started_as_sandserve_starts_it(**flags: Any) -> SGLangStandin:
    spec = resolve_spec("gpt-oss-20b", provider=ProviderName.DAYTONA)
    argv = get_engine("sglang").launch(spec, host="127.0.0.1", port=0, api_key=None).argv
    config = parse_args(argv[3:])
    assert config.enable_priority_scheduling and config.default_priority_value == 0
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return SGLangStandin(**{**fields, "port": 0, **flags})


def test_batch_work_reaches_sglang_with_a_low_priority_and_people_go_first():
    """One request runs at a time: a batch of 6 queues up; a person's request (no priority: SGLang's default,
    0) sent after them starts next; SGLang's metrics count each priority as its own series."""
    with _sglang_started_as_sandserve_starts_it(max_running_requests=1, decode_seconds=0.25) as sglang:
        endpoint = Endpoint(id="sg", url=sglang.url, model="gpt-oss-20b", engine="sglang")
        requests = [
            BatchRequest(
                f"b{i}", {"messages": [{"role": "user", "content": f"passage {i}"}], "max_tokens": 4}
            )
            for i in range(6)
        ]

        async def person(session: aiohttp.ClientSession) -> None:
            body = {"model": endpoint.model, "messages": [{"role": "user", "content": "hi"}]}
            async with session.post(f"{endpoint.base_url}/chat/completions", json=body) as answer:
                assert answer.status == 200

        async def scenario() -> int:
            """How many batch requests were waiting when the person's request joined the queue."""
            scheduler = sglang.state.scheduler
            assert scheduler is not None
            batch = asyncio.ensure_future(
                run_requests(endpoint, requests, lambda result: None, concurrency=6)
            )
            async with aiohttp.ClientSession() as session:
                while sum(scheduler.queued().values()) < 5:
                    await asyncio.sleep(0.01)
                asked = asyncio.ensure_future(person(session))
                while not scheduler.queued()[0]:
                    await asyncio.sleep(0.005)
                waiting = scheduler.queued()[-1]
                await asked
            await batch
            return waiting

        waiting = asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD_S))
        scheduler = sglang.state.scheduler
        assert scheduler is not None
        # Every batch request that was waiting when the person's came started after it.
        assert waiting >= 1
        assert scheduler.started[-waiting - 1 :] == [0] + [-1] * waiting
        metrics = httpx.get(f"{sglang.url}/metrics").text
        assert 'sglang:num_requests_total{model_name="gpt-oss-20b",priority="-1"} 6.0' in metrics
        assert 'sglang:num_requests_total{model_name="gpt-oss-20b",priority="0"} 1.0' in metrics


def test_sglang_answers_a_priority_that_is_not_an_integer_with_its_validation_error():
    with _sglang_started_as_sandserve_starts_it() as sglang:
        body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}], "priority": "high"}
        answer = httpx.post(f"{sglang.url}/v1/chat/completions", json=body)
        assert answer.status_code == 400
        assert "'loc': ('body', 'priority')" in answer.json()["message"]


def test_sglang_refuses_priority_scheduling_under_a_prefix_policy_and_sandserve_does_not_ask_for_it():
    spec = resolve_spec("gpt-oss-20b", provider=ProviderName.DAYTONA, extra_args=("--schedule-policy", "lpm"))
    argv = get_engine("sglang").launch(spec, host="127.0.0.1", port=0, api_key=None).argv
    assert "--enable-priority-scheduling" not in argv
    refused = subprocess.run(
        [sys.executable, "-m", "standins.sglang_server", "--model-path", "m", "--schedule-policy", "lpm",
         "--enable-priority-scheduling"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert refused.returncode == 1
    assert "schedule_policy must be 'fcfs' or 'lof'. 'lpm' is not supported" in refused.stderr


# --- the gateway (smg, started as a fleet starts it) --------------------------------------------------


def test_the_gateway_admits_batch_work_as_bulk_and_passes_its_priority_on_to_sglang(tmp_path: Path):
    with _sglang_started_as_sandserve_starts_it() as sglang:
        port, prometheus_port = free_port(), free_port()
        launch = gateway_launch(
            port=port, prometheus_port=prometheus_port, policy="round_robin", api_key=None,
            worker_urls=[sglang.url], gateway="smg",
        )  # fmt: skip
        assert "--priority-scheduler-enabled" in launch.argv
        log = (tmp_path / "gateway.log").open("wb")
        gateway = subprocess.Popen(
            launch.argv, env={**os.environ, **launch.env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            endpoint = Endpoint(id="gw", url=f"http://127.0.0.1:{port}", model="gpt-oss-20b", engine="sglang")
            poll_until(
                lambda: gateway.poll() is not None or _status(f"{endpoint.base_url}/models") == 200,
                what="the gateway answering",
                timeout=HANG_GUARD_S,
                interval=0.1,
            )
            assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
            requests = [
                BatchRequest(f"b{i}", {"messages": [{"role": "user", "content": f"p{i}"}], "max_tokens": 4})
                for i in range(4)
            ]
            asyncio.run(run_requests(endpoint, requests, lambda result: None, concurrency=2))
            person = {"model": endpoint.model, "messages": [{"role": "user", "content": "hi"}]}
            assert (
                httpx.post(f"{endpoint.base_url}/chat/completions", json=person, timeout=60).status_code
                == 200
            )
            metrics = httpx.get(f"http://127.0.0.1:{prometheus_port}/metrics", timeout=10).text
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
            log.close()
    # smg read the header: the batch was admitted as bulk, the person (no header) as default...
    assert 'smg_scheduler_admit_total{class="bulk",outcome="admitted"} 4' in metrics
    assert 'smg_scheduler_admit_total{class="default",outcome="admitted"} 1' in metrics
    # ... and passed the body's priority on to SGLang (it does not forward the header itself).
    scheduler = sglang.state.scheduler
    assert scheduler is not None and scheduler.labels == {"-1": 4, "0": 1}


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def test_a_batch_makes_room_while_people_wait_and_a_fixed_concurrency_does_not():
    """SGLang runs one request at a time; while people's requests wait in its queue the batch lowers its
    in-flight count (shown in its progress), and with --concurrency it keeps it."""
    with _sglang_started_as_sandserve_starts_it(max_running_requests=1, decode_seconds=0.05) as sglang:
        endpoint = Endpoint(id="sg", url=sglang.url, model="gpt-oss-20b", engine="sglang")

        async def scenario(adaptive: bool) -> tuple[list[int | None], Any]:
            limits: list[int | None] = []
            requests = [
                BatchRequest(f"b{i}", {"messages": [{"role": "user", "content": f"p{i}"}], "max_tokens": 4})
                for i in range(60)
            ]
            batch = asyncio.ensure_future(
                run_requests(
                    endpoint, requests, lambda result: None, concurrency=8, adaptive=adaptive,
                    on_progress=lambda progress: limits.append(progress.in_flight_limit),
                )
            )  # fmt: skip
            body = {"model": endpoint.model, "messages": [{"role": "user", "content": "hi"}]}
            async with aiohttp.ClientSession() as session:
                # People keep asking, a few at a time, until the batch has made room (or has finished).
                while not batch.done() and not any(limit is not None and limit < 8 for limit in limits):
                    people = [
                        session.post(f"{endpoint.base_url}/chat/completions", json=body) for _ in range(4)
                    ]
                    for answer in await asyncio.gather(*people):
                        assert answer.status == 200
                        answer.release()
            return limits, await batch

        limits, summary = asyncio.run(asyncio.wait_for(scenario(True), HANG_GUARD_S))
        assert summary.complete and summary.times_yielded >= 1
        assert summary.lowest_in_flight is not None and summary.lowest_in_flight < 8
        assert any(limit is not None and limit < 8 for limit in limits)

        limits, summary = asyncio.run(asyncio.wait_for(scenario(False), HANG_GUARD_S))
        assert summary.complete and summary.times_yielded == 0 and summary.lowest_in_flight is None
        assert set(limits) == {None}


# --- bench --background ------------------------------------------------------------------------------------


def test_bench_background_compares_idle_with_a_batch_without_and_with_priority(
    local_endpoint: Endpoint, tmp_path: Path
):
    batch_file = tmp_path / "batch.jsonl"
    bodies = [
        {"messages": [{"role": "user", "content": f"summarise passage {i} " * 40}], "max_tokens": 16}
        for i in range(8)
    ]
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i, body in enumerate(bodies)
    ]
    batch_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = run_cli(
        "bench", local_endpoint.id, "--background", str(batch_file), "--rate", "4", "--requests", "4",
        "--input-len", "8", "--output-len", "4", "--warmup", "1", "--output", str(tmp_path / "out"),
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for phase in ("idle", "batch alone", "batch, no priority", "batch, priority"):
        assert phase in done.stdout
    assert re.search(r"priority: interactive TTFT p99 [\d.]+x idle, batch [\d.]+x alone", done.stdout)
    report = json.loads((tmp_path / "out" / "background.json").read_text())
    phases = {phase["name"]: phase for phase in report["phases"]}
    assert phases["idle"]["batch_tokens_per_s"] is None and phases["idle"]["interactive"]["completed"] == 4
    assert phases["batch alone"]["batch_requests"] > 0 and phases["batch alone"]["interactive"] is None
    assert phases["batch, no priority"]["batch_priority"] == "normal"
    assert phases["batch, priority"]["batch_priority"] == "low"
    assert (tmp_path / "out" / "background.png").stat().st_size > 0
    assert not list((tmp_path / "out").glob("*.partial*"))


def test_bench_background_refuses_a_missing_batch_file(tmp_path: Path):
    refused = run_cli("bench", "--background", str(tmp_path / "nope.jsonl"))
    assert refused.returncode != 0
    assert "nope.jsonl" in refused.stderr and "no such file" in refused.stderr
