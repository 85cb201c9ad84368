"""Fleets: real llama-server workers behind the real SGLang Model Gateway (sglang-router), all on 127.0.0.1;
and SGLang workers (its stand-in) in Daytona stand-in sandboxes, where llama.cpp cannot run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import parse_exports, sandserve_command, sglang_daytona_standin, take_everything_down
from conftest import run_cli as run_sandserve
from polling import poll_until, poll_while
from standins.daytona_api import DaytonaStandin

from sandserve.engines.llamacpp import MachineFit
from sandserve.errors import EngineDiedError, FleetBootError, GatewayDiedError, NotAFleetMemberError
from sandserve.fleet import (
    Fleet,
    add_worker,
    fleet_down,
    fleet_status,
    fleet_up,
    remove_worker,
)
from sandserve.fleet.routing_bench import random_text
from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import live_group_members, port_is_free, process_start_time
from sandserve.serve.ledger import FLEET_LABEL, Registry, State
from sandserve.serve.resolve import resolve_spec

pytestmark = pytest.mark.usefixtures("llama_server", "tiny_model")


def engine_command_line(adapter_pid: int | None) -> list[str]:
    """The llama-server a local endpoint's adapter (``adapter_pid``) started: its child's argv."""
    children = Path(f"/proc/{adapter_pid}/task/{adapter_pid}/children").read_text().split()
    argvs = [Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0") for child in children]
    return next(argv for argv in argvs if "-tb" in argv)


def command_lines() -> dict[int, bytes]:
    """Every process's command line: what any local user can read in /proc/PID/cmdline."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found[int(entry.parent.name)] = entry.read_bytes()
        except OSError:
            continue
    return found


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_sandserve(*args, env=env, timeout=180)  # this file's commands run longer


def local_fleet(workers: int = 2, policy: str = "cache_aware", **kwargs: object) -> Fleet:
    return fleet_up(resolve_spec("tiny", provider="local"), workers, policy, **kwargs)  # type: ignore[arg-type]


def listed_workers(fleet: Fleet) -> list[dict]:
    response = httpx.get(f"{fleet.url}/workers", headers=fleet.endpoint.request_headers(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["workers"]


def ask(fleet: Fleet, text: str = "Hello", max_tokens: int = 4):
    with fleet.endpoint.openai(max_retries=0) as client:
        return client.chat.completions.create(
            model=fleet.endpoint.model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens
        )


def worker_pids(fleet: Fleet) -> dict[str, int]:
    registry = Registry()
    return {m.endpoint_id: registry.get(m.endpoint_id).sandbox.pid for m in fleet.members}


def alive(pid: int) -> bool:
    return process_start_time(pid) is not None


def ports_of(fleet: Fleet) -> list[int]:
    registry = Registry()
    return [
        fleet.gateway.port,
        fleet.gateway.prometheus_port,
        *(registry.get(m.endpoint_id).sandbox.port for m in fleet.members),
    ]


def documents(count: int, words: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [random_text(rng, words) for _ in range(count)]


# --- serving ---------------------------------------------------------------------------------------------


def test_two_workers_serve_as_one_endpoint_that_needs_the_gateway_key():
    fleet = local_fleet(2)

    for question in ("Hello", "What is a fleet?", "Count to three"):
        reply = ask(fleet, question)
        assert reply.usage.completion_tokens > 0
    kwargs = fleet.endpoint.litellm_kwargs()
    assert kwargs["api_base"] == f"{fleet.url}/v1" and kwargs["api_key"] == fleet.endpoint.api_key

    listed = listed_workers(fleet)
    assert sorted(w["id"] for w in listed) == sorted(m.worker_id for m in fleet.members)
    assert all(w["is_healthy"] for w in listed)

    body = {"model": fleet.endpoint.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(f"{fleet.url}/v1/chat/completions", json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer sk-wrong"}
    assert (
        httpx.post(f"{fleet.url}/v1/chat/completions", json=body, headers=wrong, timeout=10).status_code
        == 401
    )
    for member in fleet.members:  # the workers do not answer without their own keys either
        assert httpx.post(f"{member.url}/v1/chat/completions", json=body, timeout=10).status_code == 401
    keys = [fleet.endpoint.api_key] + [Registry().get(m.endpoint_id).endpoint.api_key for m in fleet.members]
    assert not [
        pid for pid, cmdline in command_lines().items() for key in keys if key and key.encode() in cmdline
    ]

    registry = Registry()
    record = registry.get(fleet.id)
    assert record.provider == "gateway" and record.state is State.READY
    assert record.endpoint.url == fleet.url and record.endpoint.api_key == fleet.endpoint.api_key
    assert record.sandbox.members == fleet.members and len(fleet.members) == 2
    half = max(1, MachineFit().cores // 2)  # both workers run on this machine: each keeps to half the cores
    for member in fleet.members:
        worker = registry.get(member.endpoint_id)
        assert worker.state is State.READY and worker.spec["labels"][FLEET_LABEL] == fleet.id
        assert worker.endpoint.api_key and worker.endpoint.api_key != fleet.endpoint.api_key
        server = engine_command_line(worker.sandbox.pid)
        threads, batch_threads = int(server[server.index("-t") + 1]), int(server[server.index("-tb") + 1])
        assert 1 <= threads <= batch_threads <= half, server


def test_workers_join_and_leave_while_it_serves_and_down_leaves_nothing():
    fleet = local_fleet(2)
    failures: list[str] = []
    served = 0
    stop = threading.Event()

    def keep_asking() -> None:
        nonlocal served
        while not stop.is_set():
            try:
                ask(fleet, "Still there?", max_tokens=2)
                served += 1
            except Exception as exc:
                failures.append(repr(exc))

    traffic = threading.Thread(target=keep_asking)
    traffic.start()
    try:
        added = add_worker(fleet.id)
        assert len(listed_workers(fleet)) == 3
        first = fleet.members[0]
        first_pid, first_port = worker_pids(fleet)[first.endpoint_id], ports_of(fleet)[2]
        removed = remove_worker(fleet.id, first.endpoint_id[:-1])  # a unique prefix names it too
    finally:
        stop.set()
        traffic.join()
    assert failures == [] and served > 0

    assert removed == first
    assert sorted(w["id"] for w in listed_workers(fleet)) == sorted(
        [fleet.members[1].worker_id, added.worker_id]
    )
    assert not alive(first_pid) and port_is_free(first_port)
    assert Registry().get(first.endpoint_id).state is State.DOWN
    assert ask(fleet).usage.completion_tokens > 0
    with pytest.raises(NotAFleetMemberError):
        remove_worker(fleet.id, "no-such-worker")

    current = fleet_status(fleet.id)[0]
    assert [w.endpoint_id for w in current.workers] == [fleet.members[1].endpoint_id, added.endpoint_id]
    assert all(w.healthy and w.running for w in current.workers)
    # Each worker's boot, from its receipt: a local provider keeps no snapshots, so every boot is cold.
    assert all(w.boot is not None and w.boot.startswith("cold ") for w in current.workers)
    gateway_pid = fleet.gateway.pid
    fleet = Fleet.from_record(Registry().get(fleet.id))
    pids, ports = [gateway_pid, *worker_pids(fleet).values()], ports_of(fleet)

    fleet_down(fleet.id)
    assert not any(alive(pid) for pid in pids)
    assert all(live_group_members(pid) == [] for pid in pids)
    assert all(port_is_free(port) for port in ports)
    assert {record.state for record in Registry().list(include_down=True)} == {State.DOWN}


def test_a_worker_that_dies_is_routed_around():
    fleet = local_fleet(2)
    document = documents(1, 300)[0]
    for question in ("Summarise it.", "Name its places."):
        ask(fleet, f"{document}\n\n{question}", max_tokens=2)
    holder = max(fleet.members, key=prompt_tokens_seen)  # cache_aware sends this document back to it

    os.killpg(worker_pids(fleet)[holder.endpoint_id], signal.SIGKILL)
    for question in ("Who wrote it?", "Is it long?", "Translate it.", "Shorten it.", "Rhyme it."):
        assert ask(fleet, f"{document}\n\n{question}", max_tokens=2).usage.completion_tokens > 0

    running = {w.endpoint_id: w.running for w in fleet_status(fleet.id)[0].workers}
    assert running[holder.endpoint_id] is False and list(running.values()).count(True) == 1


def prompt_tokens_seen(member) -> float:
    """Prompt tokens a worker has processed or reused from its cache (its own /metrics)."""
    key = Registry().get(member.endpoint_id).endpoint.api_key
    text = httpx.get(f"{member.url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    values = dict(line.split() for line in text.splitlines() if line.startswith("llamacpp:prompt_tokens"))
    return float(values["llamacpp:prompt_tokens_total"]) + float(
        values["llamacpp:prompt_tokens_cached_total"]
    )


def test_cache_aware_routing_reuses_cached_prefixes():
    fleet = local_fleet(2, "cache_aware")
    cached = prompt = 0
    for document in documents(3, 250):
        for question in ("What is it about?", "Which word comes first?", "How does it end?"):
            reply = ask(fleet, f"{document}\n\n{question}", max_tokens=2)
            stats = fleet.endpoint.cache_stats(reply)
            cached, prompt = cached + stats.cached_tokens, prompt + stats.prompt_tokens
    assert prompt > 0 and cached / prompt > 0


# --- Daytona workers ---------------------------------------------------------------------------------------


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    """SGLang workers (its stand-in, in SGLang's shapes: /health, /server_info, /v1/loads, /metrics) on
    Daytona sandboxes (the stand-in API, the real SDK), as the stock SGLang image serves them. Each sandbox
    serves on its own "8000" (a local port of its own, DAYTONA_STANDIN_PORT_8000, which the SGLang stand-in
    listens on)."""
    with sglang_daytona_standin(remap_ports=[8000]) as standin:
        monkeypatch.setenv("DAYTONA_API_KEY", standin.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", standin.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.1)
        yield standin
        take_everything_down()  # while the stand-in still answers


def test_daytona_workers_are_public_previews_registered_with_their_keys(daytona):
    # The default auth mode on Daytona is the preview token, which the gateway would drop: the fleet
    # serves its workers in key mode instead.
    fleet = fleet_up(resolve_spec(provider="daytona"), 2, "round_robin")
    registry = Registry()
    for member in fleet.members:
        worker = registry.get(member.endpoint_id).endpoint
        assert worker.provider == "daytona" and worker.auth == "key"
        assert PREVIEW_TOKEN_HEADER not in worker.headers and daytona.sandboxes[worker.sandbox_id].public
        assert "/preview/" in member.url  # the gateway reaches the worker through the preview proxy
        assert (
            httpx.post(
                f"{member.url}/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=10
            ).status_code
            == 401
        )

    for question in ("Hello", "Again", "And again", "Once more"):  # round robin: both workers answer
        assert ask(fleet, question).usage.completion_tokens > 0
    assert all(w["is_healthy"] for w in listed_workers(fleet)) and len(listed_workers(fleet)) == 2

    sandbox_ids = [registry.get(m.endpoint_id).sandbox.sandbox_id for m in fleet.members]
    fleet_down(fleet.id)
    assert set(sandbox_ids) <= set(daytona.deleted_ids)


def test_daytona_workers_of_a_spec_captured_once_boot_warm_in_the_next_fleet(daytona):
    daytona.max_snapshot_size_gb = 40.0  # an organisation whose limit holds gpt-oss-20b's ~24 GB
    spec = resolve_spec(provider="daytona")
    fleet = fleet_up(spec, 1, "round_robin")
    [worker] = fleet_status(fleet.id)[0].workers
    assert worker.boot is not None and worker.boot.startswith("cold ")
    fleet_down(fleet.id)  # its cold worker's golden snapshot is captured before its sandbox goes
    assert [s.dto.state.value for s in daytona.snapshots.values()] == ["active"]

    fleet = fleet_up(spec, 1, "round_robin")
    [worker] = fleet_status(fleet.id)[0].workers
    assert worker.boot is not None and worker.boot.startswith("warm ")
    sandbox = daytona.sandboxes[Registry().get(worker.endpoint_id).sandbox.sandbox_id]
    assert sandbox.snapshot == next(iter(daytona.snapshots.values())).dto.name
    assert ask(fleet).usage.completion_tokens > 0
    fleet_down(fleet.id)


# --- failures -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "0 is not in the range 1<=x<=256"),
        (["--policy", "fastest"], "Unknown routing policy 'fastest'"),
        (["--policy", "power_of_two", "--workers", "1"], "power_of_two"),
    ],
    ids=["no-workers", "unknown-policy", "power-of-two-alone"],
)
def test_bad_requests_are_refused_before_anything_starts(args, message):
    result = run_cli("fleet", "up", "--provider", "local", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stdout == ""
    assert Registry().list(include_down=True) == []


def test_unknown_fleet_ids_are_named():
    for verb in (
        ["down", "fleet-nope"],
        ["status", "fleet-nope"],
        ["add", "fleet-nope"],
        ["remove", "fleet-nope", "worker"],
    ):
        result = run_cli("fleet", *verb)
        assert result.returncode == 1, result.stderr
        assert "No fleet 'fleet-nope'" in result.stderr


def test_a_worker_that_fails_to_boot_stops_the_whole_fleet(tmp_path, monkeypatch, llama_server):
    # The first worker to start gets the real engine; the second one fails to load its model.
    claimed = tmp_path / "claimed"
    engine = tmp_path / "engine.sh"
    engine.write_text(
        f'#!/bin/sh\nif mkdir {claimed} 2>/dev/null; then exec {llama_server} "$@"; fi\n'
        "echo 'llama_model_load: error loading model: tensor data is not within the file bounds'\n"
        "exit 1\n"
    )
    engine.chmod(0o755)
    monkeypatch.setenv("SANDSERVE_LLAMA_SERVER", str(engine))

    with pytest.raises(FleetBootError) as caught:
        local_fleet(2)
    error = caught.value
    assert isinstance(error.cause, EngineDiedError)
    assert "model file could not be loaded" in str(error) and "Nothing of it is left running" in str(error)
    records = Registry().list(include_down=True)
    assert {record.state for record in records} == {State.DOWN}
    workers = [record for record in records if record.provider == "local"]
    assert len(workers) == 2 and not any(alive(w.sandbox.pid) for w in workers if w.sandbox.pid is not None)
    (gateway,) = [record for record in records if record.provider == "gateway"]
    assert gateway.sandbox.pid is None  # it never started


def test_a_gateway_that_dies_while_starting_shows_its_log():
    with pytest.raises(FleetBootError) as caught:
        local_fleet(1, gateway_args=["--cache-threshold", "not-a-number"])
    error = caught.value
    assert isinstance(error.cause, GatewayDiedError)
    assert "invalid float value: 'not-a-number'" in str(error)  # the end of its log, in the message
    assert error.cause.log_path and "not-a-number" in Path(error.cause.log_path).read_text()
    records = Registry().list(include_down=True)
    assert {record.state for record in records} == {State.DOWN}
    assert not any(alive(record.sandbox.pid) for record in records)


# --- the CLI and the ledger ---------------------------------------------------------------------------------


def test_cli_exports_one_endpoint_and_ls_and_down_know_the_fleet():
    result = run_cli("fleet", "up", "--workers", "2", "--policy", "round_robin")
    assert result.returncode == 0, result.stderr
    exports = parse_exports(result.stdout)
    assert set(exports) == {"ENDPOINT", "MODEL", "TOKEN", "OPENAI_API_KEY"} and exports["TOKEN"] == ""
    body = {"model": exports["MODEL"], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {exports['OPENAI_API_KEY']}"}
    assert (
        httpx.post(
            f"{exports['ENDPOINT']}/v1/chat/completions", json=body, headers=headers, timeout=10
        ).status_code
        == 200
    )

    status = json.loads(run_cli("fleet", "status", "--json").stdout)
    assert [len(s["workers"]) for s in status] == [2] and status[0]["policy"] == "round_robin"
    assert all(w["healthy"] and w["running"] for w in status[0]["workers"])

    listed = {entry["id"]: entry for entry in json.loads(run_cli("ls", "--json").stdout)}
    (fleet_id,) = [entry_id for entry_id, entry in listed.items() if entry["provider"] == "gateway"]
    assert listed[fleet_id]["url"] == exports["ENDPOINT"] and listed[fleet_id]["state"] == "ready"
    record = Registry().get(fleet_id)
    gateway_pid = record.sandbox.pid
    worker_pids = [Registry().get(m.endpoint_id).sandbox.pid for m in record.sandbox.members]

    os.killpg(gateway_pid, signal.SIGKILL)  # a gateway that died shows as dead...
    poll_while(lambda: alive(gateway_pid), what="the gateway gone")
    listed = {entry["id"]: entry for entry in json.loads(run_cli("ls", "--json").stdout)}
    assert listed[fleet_id]["state"] == "dead"
    assert [entry["state"] for entry_id, entry in listed.items() if entry_id != fleet_id] == [
        "ready",
        "ready",
    ]

    down = run_cli("down", "--all", "--yes")  # ...and `down --all` ends the fleet with everything else
    assert down.returncode == 0, down.stderr
    assert not any(alive(pid) for pid in worker_pids)
    assert json.loads(run_cli("ls", "--json").stdout) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_interrupting_fleet_up_leaves_no_orphan(tmp_path, sig):
    started = tmp_path / "engines"
    started.mkdir()
    hung = tmp_path / "engine.sh"  # an engine that never becomes ready
    hung.write_text(f"#!/bin/sh\ntouch {started}/$$\nsleep 600 &\nwait\n")
    hung.chmod(0o755)
    process = subprocess.Popen(
        [*sandserve_command(), "fleet", "up", "--workers", "2", "--provider", "local"],
        env={**os.environ, "SANDSERVE_LLAMA_SERVER": str(hung)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll_until(lambda: len(list(started.iterdir())) >= 2, what="both engines started")
        engine_pids = [int(path.name) for path in started.iterdir()]
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Interrupted while booting" in stderr and stdout == ""
    assert len(engine_pids) == 2 and all(live_group_members(pid) == [] for pid in engine_pids)
    assert Registry().list() == []
