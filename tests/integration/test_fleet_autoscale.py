"""The autoscaler with real llama-server workers behind the real gateway: it adds a worker while requests stay
queued, returns to --min when idle, scales to zero and back for a held request, replaces a killed worker,
drains before removing, and every process is visible in `ls` / `fleet status` and gone after `down`. On
Daytona (the stand-in) the workers are SGLang's stand-in, as the stock SGLang image serves them."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from conftest import run_cli
from polling import poll_until
from test_fleet import daytona  # noqa: F401 - the Daytona stand-in fixture (SGLang workers)

from sandserve.fleet import (
    Fleet,
    ScalerSettings,
    add_worker,
    fleet_status,
    fleet_up,
    load_fleet,
    remove_worker,
)
from sandserve.fleet.routing_bench import random_text
from sandserve.providers.local import live_group_members, process_start_time
from sandserve.serve.ledger import Registry
from sandserve.serve.resolve import resolve_spec

pytestmark = pytest.mark.usefixtures("llama_server", "tiny_model")

#: An SGLang worker (its stand-in) that runs two requests at a time, each for a while: the rest queue, as on a
#: local worker's two slots.
TWO_RUNNING = ("--max-running-requests", "2")
SLOW_SGLANG = {"SANDSERVE_FAKE_SGLANG_DECODE_SECONDS": "0.5"}
#: Short delays so that every scale event happens within seconds (the defaults are minutes).
FAST = {"up_delay": 0.5, "down_delay": 1.5, "interval": 0.2, "backoff": 5.0}


def fresh_prompt(rng: random.Random) -> str:
    """No two share a prefix: cache_aware keeps a repeated prefix on the worker that holds it, whatever its
    queue, so only new prefixes show that a new worker takes work."""
    return random_text(rng, 150)


def scaled_fleet(
    min_workers: int,
    max_workers: int,
    workers: int = 1,
    gateway: str = "sglang-router",
    model: str = "tiny",
    **settings: float,
) -> Fleet:
    """Workers of the tiny model by default; a test that needs requests to queue up serves SmolLM2."""
    scaling = ScalerSettings(min_workers=min_workers, max_workers=max_workers, **{**FAST, **settings})
    return fleet_up(resolve_spec(model, provider="local"), workers, scaling=scaling, gateway=gateway)


def member_ids(fleet: Fleet) -> list[str]:
    return [member.endpoint_id for member in load_fleet(fleet.id).members]


def actions(fleet: Fleet) -> list[str]:
    scaler = fleet_status(fleet.id)[0].scaler
    assert scaler is not None
    return [decision["action"] for decision in scaler.get("decisions", [])]


@contextmanager
def sustained_load(fleet: Fleet, clients: int = 6, max_tokens: int = 48) -> Iterator[dict[str, list]]:
    """``clients`` requests in flight at all times (more than a worker's 2 slots: the rest queue)."""
    stop = threading.Event()
    outcome: dict[str, list] = {"ok": [], "failed": []}

    def client() -> None:
        rng = random.Random()
        with fleet.endpoint.openai(max_retries=0, timeout=120) as openai:
            while not stop.is_set():
                try:
                    reply = openai.chat.completions.create(
                        model=fleet.endpoint.model,
                        messages=[{"role": "user", "content": fresh_prompt(rng)}],
                        max_tokens=max_tokens,
                        extra_body={"ignore_eos": True},
                    )
                    outcome["ok"].append(reply.usage.completion_tokens)
                except Exception as exc:
                    outcome["failed"].append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield outcome
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_queued_requests_add_a_worker_and_an_idle_fleet_returns_to_min(closing):
    fleet = scaled_fleet(1, 2)
    first = member_ids(fleet)
    assert len(first) == 1

    with sustained_load(fleet) as outcome:
        poll_until(lambda: len(member_ids(fleet)) == 2, what="a second worker")
        status = fleet_status(fleet.id)[0]
        loads = [(w.requests_running, w.requests_queued) for w in status.workers]
        assert all(running is not None and queued is not None for running, queued in loads), loads
        poll_until(lambda: len(outcome["ok"]) >= 20, what="requests served by two workers")
    assert outcome["failed"] == []
    scaler = fleet_status(fleet.id)[0].scaler
    up = [d for d in scaler["decisions"] if d["action"] == "up"]
    assert up and "queued" in up[0]["reason"]

    poll_until(lambda: len(member_ids(fleet)) == 1, what="the fleet back at --min 1")
    poll_until(lambda: "removed" in actions(fleet), what="the drained worker taken down")
    down = [d for d in fleet_status(fleet.id)[0].scaler["decisions"] if d["action"] == "down"]
    assert "idle" in down[-1]["reason"]
    # the fleet still answers with its one worker
    reply = closing(fleet.endpoint.openai(max_retries=0)).chat.completions.create(
        model=fleet.endpoint.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert reply.usage.completion_tokens > 0


@pytest.mark.parametrize("gateway", ["sglang-router", "smg"])
def test_min_zero_holds_a_request_until_a_worker_is_up_then_answers_it(closing, gateway):
    fleet = scaled_fleet(0, 1, gateway=gateway, down_delay=0.5)
    poll_until(lambda: member_ids(fleet) == [], what="the fleet at zero workers")
    scaler = fleet_status(fleet.id)[0].scaler
    assert scaler["holder_worker_id"], scaler
    registry = Registry()
    assert all(not r.live for r in registry.members_of(fleet.id) if r.provider == "local")

    replies: list = []
    streamed: list = []
    openai = closing(fleet.endpoint.openai(max_retries=0, timeout=60))
    messages = [{"role": "user", "content": "Hello"}]

    def plain() -> None:
        replies.append(
            openai.chat.completions.create(model=fleet.endpoint.model, messages=messages, max_tokens=3)
        )

    def streaming() -> None:  # held, then streamed through the holder chunk by chunk
        stream = openai.chat.completions.create(
            model=fleet.endpoint.model,
            messages=messages,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed.extend(stream)

    threads = [threading.Thread(target=plain) for _ in range(3)] + [threading.Thread(target=streaming)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(replies) == 3 and all(reply.usage.completion_tokens > 0 for reply in replies)
    assert len(streamed) > 2 and streamed[-1].usage.completion_tokens > 0
    assert len(member_ids(fleet)) == 1
    poll_until(lambda: fleet_status(fleet.id)[0].scaler["cold_starts"], what="the cold start recorded")
    scaler = fleet_status(fleet.id)[0].scaler
    assert len(scaler["cold_starts"]) == 1 and scaler["cold_starts"][0] > 0
    assert scaler["holder_worker_id"] is None
    assert "waiting" in next(d for d in scaler["decisions"] if d["action"] == "up")["reason"]


def test_a_worker_killed_under_load_is_replaced_and_no_request_fails():
    fleet = scaled_fleet(2, 2, workers=2)
    registry = Registry()
    victim = member_ids(fleet)[0]
    with sustained_load(fleet, clients=4) as outcome:
        poll_until(lambda: len(outcome["ok"]) >= 4, what="requests under way")
        os.kill(registry.get(victim).sandbox.pid, signal.SIGKILL)
        poll_until(
            lambda: victim not in member_ids(fleet) and len(member_ids(fleet)) == 2,
            what="the killed worker replaced",
        )
        served = len(outcome["ok"])
        poll_until(lambda: len(outcome["ok"]) >= served + 6, what="requests after the replacement")
    assert outcome["failed"] == []
    assert "replace" in actions(fleet)


def test_requests_wait_for_the_replacement_of_a_fleets_only_worker(closing):
    fleet = scaled_fleet(1, 1)
    only = member_ids(fleet)[0]
    os.kill(Registry().get(only).sandbox.pid, signal.SIGKILL)
    poll_until(lambda: only not in member_ids(fleet), what="the dead worker noticed")
    reply = closing(fleet.endpoint.openai(max_retries=0, timeout=60)).chat.completions.create(
        model=fleet.endpoint.model, messages=[{"role": "user", "content": "Still there?"}], max_tokens=2
    )
    assert reply.usage.completion_tokens > 0
    assert len(member_ids(fleet)) == 1 and "replace" in actions(fleet)


def test_removing_a_busy_worker_drains_it_first():
    fleet = fleet_up(resolve_spec("tiny", provider="local"), 2, "round_robin")
    leaving = fleet.members[1]
    with sustained_load(fleet, clients=4, max_tokens=96) as outcome:
        poll_until(lambda: len(outcome["ok"]) >= 2, what="requests under way")
        remove_worker(fleet.id, leaving.endpoint_id)
        served = len(outcome["ok"])
        poll_until(lambda: len(outcome["ok"]) >= served + 4, what="requests after the removal")
    assert outcome["failed"] == []
    assert [m.endpoint_id for m in load_fleet(fleet.id).members] == [fleet.members[0].endpoint_id]
    assert not Registry().get(leaving.endpoint_id).live


def test_a_quota_refusal_backs_off_and_fleet_status_says_so(daytona):  # noqa: F811
    """Daytona (the stand-in, with the real SDK) refuses the scaler's new worker: GPU quota exceeded."""
    fleet = fleet_up(
        resolve_spec(provider="daytona", env=SLOW_SGLANG, extra_args=TWO_RUNNING),
        1,
        scaling=ScalerSettings(min_workers=1, max_workers=2, **{**FAST, "backoff": 600.0}),
    )
    daytona.fail_next_create_with_quota(maximum=1)
    creates_before = sum(
        1 for method, path in daytona.requests if method == "POST" and path.endswith("/sandbox")
    )
    with sustained_load(fleet) as outcome:
        poll_until(lambda: (fleet_status(fleet.id)[0].scaler or {}).get("backoff"), what="a back-off")
        time.sleep(2)  # a few more looks under the same queue: no new attempt while backing off
    assert outcome["failed"] == []
    scaler = fleet_status(fleet.id)[0].scaler
    assert "GPU quota exceeded" in scaler["backoff"]["reason"] and scaler["backoff"]["seconds_left"] > 0
    assert "backing off" in scaler["now"] or scaler["now"] == "within bounds"
    assert [d["action"] for d in scaler["decisions"]].count("up") == 1
    creates = sum(1 for method, path in daytona.requests if method == "POST" and path.endswith("/sandbox"))
    assert creates - creates_before == 1
    assert len(member_ids(fleet)) == 1
    shown = run_cli("fleet", "status", fleet.id)
    assert "backing off" in shown.stdout and "GPU quota exceeded" in shown.stdout, shown.stdout


def test_at_zero_a_refused_worker_is_said_at_once_then_the_next_request_is_held_and_answered(
    daytona,  # noqa: F811
    closing,
):
    fleet = fleet_up(
        resolve_spec(provider="daytona"),
        1,
        scaling=ScalerSettings(min_workers=0, max_workers=1, **{**FAST, "down_delay": 0.5, "backoff": 3.0}),
    )
    poll_until(lambda: member_ids(fleet) == [], what="the fleet at zero workers")
    poll_until(lambda: fleet_status(fleet.id)[0].scaler["holder_worker_id"], what="the holder registered")
    daytona.fail_next_create_with_quota(maximum=1)
    ask = closing(fleet.endpoint.openai(max_retries=0, timeout=120)).chat.completions.create
    body = {
        "model": fleet.endpoint.model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 2,
    }
    with pytest.raises(Exception) as refused:
        ask(**body)
    assert "cannot start one now" in str(refused.value) and "GPU quota exceeded" in str(refused.value)
    assert fleet_status(fleet.id)[0].scaler["backoff"]

    poll_until(lambda: not fleet_status(fleet.id)[0].scaler.get("refusing"), what="the back-off over")
    assert ask(**body).usage.completion_tokens > 0  # held while a worker boots, then answered
    assert len(member_ids(fleet)) == 1


def pids_of_fleet(fleet_id: str) -> list[int]:
    registry = Registry()
    rows = [registry.get(fleet_id), *registry.members_of(fleet_id, include_down=True)]
    return [row.sandbox.pid for row in rows if row.sandbox.pid]


def test_a_dead_scaler_or_gateway_shows_in_ls_and_status_and_down_cleans_up():
    up = run_cli(
        "fleet", "up", "--provider", "local", "--model", "tiny", "--workers", "1", "--min", "1", "--max", "2",
        "--up-delay", "0.5", "--down-delay", "1", "--interval", "0.2", "--json",
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    fleet_id = json.loads(up.stdout)["id"]
    registry = Registry()
    scaler = next(r for r in registry.members_of(fleet_id) if r.provider == "fleet-scaler")
    status = json.loads(run_cli("fleet", "status", fleet_id, "--json").stdout)[0]
    assert status["scaler"]["running"] and status["scaler"]["settings"]["max_workers"] == 2

    scaled = run_cli("fleet", "scale", fleet_id, "--max", "3", "--down-delay", "2")
    assert scaled.returncode == 0, scaled.stderr
    poll_until(lambda: registry.get(scaler.id).sandbox.settings["max_workers"] == 3, what="new bounds")

    os.kill(scaler.sandbox.pid, signal.SIGKILL)
    poll_until(lambda: process_start_time(scaler.sandbox.pid) is None, what="the scaler gone")
    listing = {row["id"]: row for row in json.loads(run_cli("ls", "--json").stdout)}
    assert listing[scaler.id]["state"] == "dead", listing[scaler.id]
    shown = run_cli("fleet", "status", fleet_id)
    assert "autoscaler" in shown.stdout and "dead" in shown.stdout, shown.stdout

    restarted = run_cli("fleet", "scale", fleet_id, "--min", "1")  # a dead scaler is replaced by a new one
    assert restarted.returncode == 0, restarted.stderr
    status = json.loads(run_cli("fleet", "status", fleet_id, "--json").stdout)[0]
    assert status["scaler"]["running"] and status["scaler"]["id"] != scaler.id

    gateway_pid = registry.get(fleet_id).sandbox.pid
    os.killpg(gateway_pid, signal.SIGKILL)
    new_scaler = next(r for r in Registry().members_of(fleet_id) if r.id == status["scaler"]["id"])
    poll_until(lambda: process_start_time(new_scaler.sandbox.pid) is None, what="the scaler to stop")
    status = json.loads(run_cli("fleet", "status", fleet_id, "--json").stdout)[0]
    assert not status["gateway_running"] and not status["scaler"]["running"]
    assert status["scaler"]["decisions"][-1]["reason"] == "the gateway is not running any more"

    pids = pids_of_fleet(fleet_id)
    down = run_cli("down", fleet_id)
    assert down.returncode == 0, down.stderr
    assert all(not live_group_members(pid) for pid in pids)
    assert all(r.state.value == "down" for r in Registry().members_of(fleet_id, include_down=True))
    assert json.loads(run_cli("ls", "--json").stdout) == []


def test_down_while_the_scaler_boots_a_worker_leaves_nothing_running():
    fleet = scaled_fleet(0, 1, down_delay=0.5)
    poll_until(lambda: member_ids(fleet) == [], what="the fleet at zero workers")
    poll_until(lambda: fleet_status(fleet.id)[0].scaler["holder_worker_id"], what="the holder registered")
    body = {"model": fleet.endpoint.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}

    def ask() -> None:
        # `down` takes the gateway away under the held request: an answer or a dropped connection, either is
        # fine here (what this test checks is what is left running).
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{fleet.url}/v1/chat/completions",
                json=body,
                headers=fleet.endpoint.request_headers(),
                timeout=60,
            )

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    registry = Registry()
    poll_until(
        lambda: any(
            r.provider == "local" for r in registry.members_of(fleet.id) if r.state.value == "booting"
        ),
        what="a worker booting for the held request",
    )
    result = run_cli("down", fleet.id)
    assert result.returncode == 0, result.stderr
    asking.join(timeout=60)
    time.sleep(2)  # a boot still finishing in the scaler would have started its server by now
    rows = registry.members_of(fleet.id, include_down=True)
    assert all(r.state.value == "down" for r in rows)
    assert len([r for r in rows if r.provider == "local"]) <= 3  # the first worker and at most 2 boots
    assert all(not live_group_members(pid) for pid in pids_of_fleet(fleet.id))


def test_bad_bounds_are_refused_before_anything_starts():
    result = run_cli("fleet", "up", "--provider", "local", "--min", "3", "--max", "2")
    assert result.returncode != 0 and "--max (2) must be at least --min (3)" in result.stderr
    result = run_cli(
        "fleet", "up", "--provider", "local", "--policy", "power_of_two", "--min", "1", "--max", "3"
    )
    assert result.returncode != 0 and "--min 2 or more" in result.stderr
    assert Registry().list() == []


def test_load_probes_carry_the_skip_activity_header_and_read_the_engine(local_endpoint):
    """What a probe sends, recorded by a relay in front of the real engine (as Daytona's proxy would see
    it)."""
    import dataclasses
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from sandserve.fleet.loads import read_load
    from sandserve.providers.daytona_headers import SKIP_ACTIVITY_HEADER

    seen: list[dict[str, str]] = []

    class Relay(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            forwarded = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            upstream = httpx.get(local_endpoint.url + self.path, headers=forwarded, timeout=5)
            self.send_response(upstream.status_code)
            self.send_header("Content-Length", str(len(upstream.content)))
            self.end_headers()
            self.wfile.write(upstream.content)

        def log_message(self, *args: object) -> None:
            pass

    relay = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        through_relay = dataclasses.replace(local_endpoint, url=f"http://127.0.0.1:{relay.server_port}")
        load = read_load(through_relay)
    finally:
        relay.shutdown()
        relay.server_close()
    assert load is not None and load.running == 0 and load.queued == 0
    assert seen and seen[0].get(SKIP_ACTIVITY_HEADER) == "true"


def test_smg_serves_with_one_fleet_key_and_workers_join_while_it_serves(closing):
    """smg passes the client's key on to workers, so behind it every worker takes the gateway's key."""
    fleet = fleet_up(resolve_spec("tiny", provider="local"), 1, gateway="smg")
    registry = Registry()
    assert fleet.gateway_name == "smg"
    assert registry.get(fleet.members[0].endpoint_id).endpoint.api_key == fleet.endpoint.api_key
    add_worker(fleet.id)
    fleet = load_fleet(fleet.id)
    assert len(fleet.members) == 2
    for member in fleet.members:
        assert registry.get(member.endpoint_id).endpoint.api_key == fleet.endpoint.api_key
    client = closing(fleet.endpoint.openai(max_retries=0))
    for text in ("Hello", "Again", "Once more", "And again"):
        reply = client.chat.completions.create(
            model=fleet.endpoint.model, messages=[{"role": "user", "content": text}], max_tokens=2
        )
        assert reply.usage.completion_tokens > 0
    body = {"model": fleet.endpoint.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(f"{fleet.url}/v1/chat/completions", json=body, timeout=10).status_code == 401
    refused = run_cli("fleet", "up", "--provider", "local", "--gateway", "smg", "--public-gateway")
    assert refused.returncode != 0 and "cannot be a public gateway" in refused.stderr


def test_fleet_bench_prints_cached_share_and_latency_per_policy():
    result = run_cli(
        "fleet", "bench", "--provider", "local", "--model", "tiny", "--policies", "cache_aware,round_robin",
        "--documents", "2", "--words", "60", "--questions", "2", "--in-flight", "1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert 0 < report["ideal_cached_share"] < 1
    rows = {row["policy"]: row for row in report["results"]}
    assert set(rows) == {"cache_aware", "round_robin"}
    for row in rows.values():
        assert row["failed"] == 0 and row["requests"] == 4
        assert 0 <= row["cached_share"] <= report["ideal_cached_share"] + 1e-9
        assert 0 < row["ttft_p50_s"] <= row["e2e_p50_s"] and row["e2e_p95_s"] >= row["e2e_p50_s"]
    assert Registry().list() == []  # every fleet it made is down


@pytest.mark.parametrize("gateway", ["sglang-router", "smg"])
def test_sglang_workers_serve_and_scale_through_either_gateway(daytona, closing, gateway):  # noqa: F811
    fleet = fleet_up(
        resolve_spec(provider="daytona"),
        1,
        gateway=gateway,
        scaling=ScalerSettings(min_workers=1, max_workers=2, **FAST),
    )
    assert fleet.endpoint.engine == "sglang"
    ask = closing(fleet.endpoint.openai(max_retries=0)).chat.completions.create
    assert ask(model=fleet.endpoint.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4).choices
    worker = fleet_status(fleet.id)[0].workers[0]
    assert worker.healthy and worker.requests_running == 0 and worker.requests_queued == 0  # from /v1/loads

    scaled = run_cli("fleet", "scale", fleet.id, "--min", "2")
    assert scaled.returncode == 0, scaled.stderr
    poll_until(lambda: len(member_ids(fleet)) == 2, what="a second SGLang worker")
    for text in ("One", "Two", "Three", "Four"):
        assert ask(
            model=fleet.endpoint.model, messages=[{"role": "user", "content": text}], max_tokens=4
        ).choices
    assert all(w.healthy and w.requests_running is not None for w in fleet_status(fleet.id)[0].workers)
