"""A fleet whose autoscaler dies says so and does not stay dead: with real llama-server workers behind the
real gateway, the autoscaler of a zero-scaled fleet is killed while it boots a worker for a held request.
The fleet shows `degraded` in `ls`, `status`, `fleet status` and `top`; requests fail at once with the cause
instead of waiting for a worker nobody boots; the supervisor starts a new autoscaler, which takes the worker
left behind in hand (it joins, or is taken down), and the fleet serves again. Killing the supervisor itself
leaves the fleet `degraded` until `fleet scale` starts a new autoscaler."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import httpx
import pytest
from conftest import run_cli
from polling import poll_until
from test_fleet_autoscale import member_ids, scaled_fleet

from sandserve.fleet import Fleet, fleet_status
from sandserve.fleet.hold import REFUSED
from sandserve.providers.local import live_group_members, process_start_time
from sandserve.serve.ledger import Registry

pytestmark = pytest.mark.usefixtures("llama_server", "tiny_model")


def scaler_state(fleet: Fleet) -> dict[str, Any]:
    scaler = fleet_status(fleet.id)[0].scaler
    assert scaler is not None
    return scaler


def ask(fleet: Fleet, answers: list[httpx.Response]) -> threading.Thread:
    """One chat request in a thread of its own; its answer goes to ``answers``."""
    body = {"model": fleet.endpoint.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}

    def send() -> None:
        answers.append(
            httpx.post(
                f"{fleet.url}/v1/chat/completions",
                json=body,
                headers=fleet.endpoint.request_headers(),
                timeout=300,
            )
        )

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def booting_worker(fleet: Fleet) -> bool:
    rows = Registry().members_of(fleet.id)
    return any(r.provider == "local" and r.state.value == "booting" for r in rows)


def kill_the_autoscaler_mid_boot(fleet: Fleet) -> tuple[int, list[httpx.Response], threading.Thread]:
    """At zero workers, a request is held and a worker boots for it; then the autoscaler (not its supervisor)
    is killed. Returns the dead autoscaler's pid, the held request's answers and its thread."""
    poll_until(lambda: member_ids(fleet) == [], what="the fleet at zero workers")
    poll_until(lambda: scaler_state(fleet).get("holder_worker_id"), what="the holder registered")
    answers: list[httpx.Response] = []
    held = ask(fleet, answers)
    poll_until(lambda: booting_worker(fleet), what="a worker booting for the held request")
    pid = int(scaler_state(fleet)["pid"])
    os.kill(pid, signal.SIGKILL)
    poll_until(lambda: process_start_time(pid) is None, what="the autoscaler gone")
    return pid, answers, held


def test_a_dead_autoscaler_makes_the_fleet_degraded_and_requests_fail_at_once_with_the_cause() -> None:
    # No restart while this test looks.
    fleet = scaled_fleet(0, 1, down_delay=0.5, restart_backoff=600, model="smollm2-135m")
    _, answers, held = kill_the_autoscaler_mid_boot(fleet)

    held.join(timeout=120)  # the held request is not left waiting for its hold timeout (600 s)
    assert not held.is_alive() and answers, "the held request still waits"
    # Its connection to the dead holder dropped; the gateway's retry reached the supervisor, which said why.
    assert answers[0].status_code == REFUSED, answers[0].text
    assert "autoscaler was killed by SIGKILL" in answers[0].json()["error"]["message"]
    again: list[httpx.Response] = []
    ask(fleet, again).join(timeout=120)
    assert again and again[0].status_code == REFUSED, again
    message = again[0].json()["error"]["message"]
    assert "autoscaler was killed by SIGKILL" in message and "starts in 600 s" in message, message

    listing = {row["id"]: row for row in json.loads(run_cli("ls", "--json").stdout)}
    assert listing[fleet.id]["state"] == "degraded", listing[fleet.id]
    assert "killed by SIGKILL" in listing[fleet.id]["degraded"]
    status = json.loads(run_cli("status", fleet.id, "--json").stdout)
    assert status["state"] == "degraded"
    shown = run_cli("fleet", "status", fleet.id)
    assert "degraded" in shown.stdout and "restarting" in shown.stdout, shown.stdout
    top = json.loads(run_cli("top", fleet.id, "--once", "--json").stdout)
    gateway_rows = [row for row in _rows(top) if row.get("id") == fleet.id]
    assert gateway_rows and gateway_rows[0]["state"] == "degraded", top

    down = run_cli("down", fleet.id)  # the supervisor, between two autoscalers, ends with the fleet
    assert down.returncode == 0, down.stderr
    rows = [Registry().get(fleet.id), *Registry().members_of(fleet.id, include_down=True)]
    assert all(row.state.value == "down" for row in rows)
    assert all(not live_group_members(row.sandbox.pid) for row in rows if row.sandbox.pid)


def test_the_supervisor_restarts_the_autoscaler_and_the_worker_it_left_is_taken_in_hand() -> None:
    fleet = scaled_fleet(0, 1, down_delay=0.5, restart_backoff=0.5, model="smollm2-135m")
    dead_pid, _, held = kill_the_autoscaler_mid_boot(fleet)
    held.join(timeout=120)
    assert not held.is_alive()

    poll_until(lambda: scaler_state(fleet).get("pid") not in (None, dead_pid), what="a new autoscaler")
    served: list[httpx.Response] = []
    ask(fleet, served).join(timeout=240)  # held by the new autoscaler's holder until a worker is up
    assert served and served[0].status_code == 200, served and served[0].text
    scaler = scaler_state(fleet)
    assert scaler["running"] and "restarting" not in scaler
    notes = [d["action"] for d in scaler["decisions"]]
    assert "restarted" in notes
    assert "adopted" in notes or "removed" in notes or _settled_by_ls(fleet)
    # Nothing runs outside the fleet: every live worker is a member.
    registry = Registry()
    live = [r.id for r in registry.members_of(fleet.id) if r.provider == "local" and r.state.value != "down"]
    poll_until(lambda: sorted(live) == sorted(member_ids(fleet)), what="every live worker a member")
    assert json.loads(run_cli("status", fleet.id, "--json").stdout)["state"] == "ready"


def test_a_killed_supervisor_leaves_the_fleet_degraded_until_fleet_scale() -> None:
    fleet = scaled_fleet(1, 2, model="smollm2-135m")
    scaler_row = next(r for r in Registry().members_of(fleet.id) if r.provider == "fleet-scaler")
    child = scaler_state(fleet).get("pid", scaler_row.sandbox.pid)
    os.kill(scaler_row.sandbox.pid, signal.SIGKILL)
    poll_until(lambda: process_start_time(child) is None, what="the autoscaler to stop with its supervisor")
    listing = {row["id"]: row for row in json.loads(run_cli("ls", "--json").stdout)}
    assert listing[fleet.id]["state"] == "degraded" and "is not running" in listing[fleet.id]["degraded"]
    assert "fleet scale" in listing[fleet.id]["degraded"]
    restarted = run_cli("fleet", "scale", fleet.id, "--min", "1")
    assert restarted.returncode == 0, restarted.stderr
    listing = {row["id"]: row for row in json.loads(run_cli("ls", "--json").stdout)}
    assert listing[fleet.id]["state"] == "ready"


def _rows(top: Any) -> list[dict[str, Any]]:
    if isinstance(top, list):
        return top
    return list(top.get("rows", top.get("endpoints", [])))


def _settled_by_ls(fleet: Fleet) -> bool:
    """The worker left booting was settled by a `ls` (its boot's owner had died) before the new autoscaler
    looked: then it is down already."""
    rows = Registry().members_of(fleet.id, include_down=True)
    return any(r.provider == "local" and r.state.value == "down" for r in rows)
