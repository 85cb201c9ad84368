"""Warm boots on the stand-ins: the real `daytona` SDK against the Daytona stand-in (sandbox snapshots), whose
sandboxes run the SGLang stand-in with its boot model (tests/standins/sglang_boot_model.py): weights in the
sandbox's Hugging Face cache are not downloaded again, kernel caches present are not compiled again.

First `up` of a spec: cold, and captured at `down`. Second `up`: from the snapshot, the receipt naming the
download and the compile it skipped. A changed flag boots cold. Every fallback is taken once, with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import as_typed, run_cli, sglang_daytona_standin, take_everything_down
from daytona_api_client import SnapshotState
from standins.daytona_api import DaytonaStandin

from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.local import free_port
from sandserve.providers.warmboot import snapshot_name
from sandserve.serve import boots, lifecycle
from sandserve.serve.ledger import Registry
from sandserve.serve.receipt import BootReceipt
from sandserve.serve.resolve import resolve_spec


class Recorder(lifecycle.BootEvents):
    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.warnings: list[str] = []
        self.receipts: list[tuple[BootReceipt, BootReceipt | None]] = []

    def status(self, message: str) -> None:
        self.statuses.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def receipt(self, receipt: BootReceipt, previous: BootReceipt | None) -> None:
        self.receipts.append((receipt, previous))


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    # An organisation whose snapshots may hold 40 GB (the open-source default, 20 GB, is below the ~24 GB of
    # the image and gpt-oss-20b's weights: see the size tests).
    with sglang_daytona_standin(capture_seconds=0.05, max_snapshot_size_gb=40.0) as standin:
        monkeypatch.setenv("DAYTONA_API_KEY", standin.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", standin.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.1)
        yield standin
        take_everything_down()


def _spec(port: int, *flags: str, **overrides: object):
    return resolve_spec("gpt-oss-20b", provider="daytona", port=port, extra_args=flags, **overrides)


def _up(spec) -> tuple[object, BootReceipt, BootReceipt | None, Recorder]:
    events = Recorder()
    endpoint = lifecycle.up(spec, events=events)
    [(receipt, previous)] = events.receipts
    return endpoint, receipt, previous, events


def _down(endpoint_id: str, **options: object) -> list[str]:
    said: list[str] = []
    registry = Registry()
    lifecycle.down(registry.get(endpoint_id), registry, on_capture=said.append, **options)
    return said


def _log(daytona: DaytonaStandin, sandbox_id: str) -> str:
    [run] = [run for run in daytona.sandboxes[sandbox_id].runs if "launch_server" in run.command]
    return run.output


def test_first_up_is_cold_and_captured_second_is_warm_and_a_changed_flag_is_cold(daytona):
    port = free_port()
    spec = _spec(port)
    name = snapshot_name(spec, "H100")

    first, receipt, previous, events = _up(spec)
    assert receipt.origin == "cold" and previous is None and receipt.restored == frozenset()
    assert any(s.startswith("cold: no snapshot of this spec on H100") for s in events.statuses)
    assert {"create", "weights", "load", "compile", "graphs", "first generation"} <= {
        s.phase for s in receipt.steps
    }
    assert "skipping download" not in _log(daytona, first.sandbox_id)
    # The engine's caches were pointed into the sandbox, where a snapshot keeps them.
    home = daytona.sandboxes[first.sandbox_id].home
    assert any((home / ".cache" / "sandserve" / "sglang" / "flashinfer").rglob("*.json"))

    said = _down(first.id)
    assert said[0].startswith("capturing the golden snapshot")
    assert said[-1].startswith(f"captured snapshot {name} (24.0 GB)")
    [captured] = [s for s in daytona.snapshots.values() if s.dto.name == name]
    assert captured.dto.state == SnapshotState.ACTIVE and captured.dto.gpu == 1
    assert captured.dto.gpu_type.value == "H100" and captured.dto.size == pytest.approx(24.0, abs=0.1)

    second, receipt, previous, events = _up(spec)
    sandbox = daytona.sandboxes[second.sandbox_id]
    assert sandbox.snapshot == name and sandbox.gpu == 1 and sandbox.gpu_type == "H100"
    assert daytona.create_bodies[-1]["snapshot"] == name and "buildInfo" not in daytona.create_bodies[-1]
    assert receipt.origin == "warm" and receipt.why == f"warm: from snapshot {name} (H100)"
    assert receipt.restored == {"weights", "compile"}  # no download, no compile
    assert f"Found local HF snapshot for {spec.model}" in _log(daytona, second.sandbox_id)
    assert previous is not None and previous.origin == "cold" and previous.endpoint_id == first.id
    # A warm boot is not captured again.
    assert _down(second.id) == []

    third, receipt, _previous, events = _up(_spec(port, "--mem-fraction-static", "0.8"))
    assert receipt.origin == "cold" and daytona.sandboxes[third.sandbox_id].snapshot is None
    assert "skipping download" not in _log(daytona, third.sandbox_id)


def test_receipt_is_in_the_ledger_and_status_shows_it(daytona):
    endpoint, receipt, _previous, _events = _up(_spec(free_port()))
    assert boots.boot_of(Registry(), endpoint.id) == receipt
    result = run_cli("status", endpoint.id, "--json")
    assert result.returncode == 0, result.stderr
    boot = json.loads(result.stdout)["boot"]
    assert boot["origin"] == "cold" and boot["slowest"]
    assert boot["steps"][0]["step"] == "create"


def _captured(daytona: DaytonaStandin, spec) -> str:
    endpoint, *_ = _up(spec)
    said = _down(endpoint.id)
    assert said[-1].startswith("captured snapshot"), said
    return snapshot_name(spec, "H100")


def test_an_inactive_snapshot_is_activated_and_used(daytona):
    spec = _spec(free_port())
    name = _captured(daytona, spec)
    daytona.deactivate_snapshot(name)
    _endpoint, receipt, _previous, _events = _up(spec)
    assert receipt.origin == "warm" and f"snapshot {name} was inactive: activated" in receipt.why
    assert daytona.snapshot_named(name).dto.state == SnapshotState.ACTIVE


def test_a_failed_snapshot_boots_cold_with_its_reason(daytona):
    spec = _spec(free_port())
    name = _captured(daytona, spec)
    daytona.fail_snapshot(name, "push to the registry failed")
    _endpoint, receipt, _previous, _events = _up(spec)
    assert receipt.origin == "cold"
    assert f"snapshot {name} failed (push to the registry failed)" in receipt.why
    assert f"sandserve snapshots delete {name}" in receipt.why


def test_a_snapshot_gone_between_the_plan_and_the_create_falls_back_to_the_image(daytona, monkeypatch):
    spec = _spec(free_port())
    name = _captured(daytona, spec)
    original = daytona.snapshot_for_create

    def deleted_meanwhile(key: str):
        daytona.snapshots.pop(daytona.snapshot_named(key).dto.id)
        return original(key)

    monkeypatch.setattr(daytona, "snapshot_for_create", deleted_meanwhile)
    endpoint, receipt, _previous, events = _up(spec)
    assert receipt.origin == "cold" and daytona.sandboxes[endpoint.sandbox_id].snapshot is None
    [warning] = [w for w in events.warnings if w.startswith("booting cold")]
    assert warning.startswith(f"booting cold from the image: Daytona refused snapshot {name}")
    assert "not found" in warning


def test_a_capture_over_the_size_limit_is_not_attempted_and_names_the_limit(daytona, monkeypatch):
    monkeypatch.setenv("SANDSERVE_SNAPSHOT_LIMIT_GB", "20")
    endpoint, *_ = _up(_spec(free_port()))
    said = _down(endpoint.id)
    assert "about 24.0 GB" in said[-1] and "over the organisation's snapshot size limit of 20 GB" in said[-1]
    assert "SANDSERVE_SNAPSHOT_LIMIT_GB from environment" in said[-1]
    assert daytona.snapshots == {} and endpoint.sandbox_id in daytona.deleted_ids


def test_a_capture_the_service_fails_on_size_says_why(daytona):
    # No limit told to sandserve: it tries, and the service (the open-source default, 20 GB) refuses.
    daytona.max_snapshot_size_gb = 20.0
    spec = _spec(free_port())
    endpoint, *_ = _up(spec)
    said = _down(endpoint.id)
    assert "ended error" in said[-1] and "exceeds the maximum allowed size (20 GB)" in said[-1]
    assert "set SANDSERVE_SNAPSHOT_LIMIT_GB" in said[-1]
    _endpoint, receipt, _previous, _events = _up(spec)
    assert receipt.origin == "cold" and "failed (Snapshot size" in receipt.why


def test_the_snapshot_quota_refusal_is_reported_and_the_sandbox_still_deleted(daytona):
    daytona.max_snapshots = 0
    endpoint, *_ = _up(_spec(free_port()))
    said = _down(endpoint.id)
    assert "Snapshot quota exceeded. Maximum allowed: 0" in said[-1]
    assert endpoint.sandbox_id in daytona.deleted_ids


def test_no_snapshot_boots_cold_and_captures_nothing(daytona):
    spec = _spec(free_port())
    name = _captured(daytona, spec)
    endpoint, receipt, _previous, _events = _up(_spec(spec.port, warm_boot=False))
    assert receipt.origin == "cold" and daytona.sandboxes[endpoint.sandbox_id].snapshot is None
    assert _down(endpoint.id) == []
    assert [s.dto.name for s in daytona.snapshots.values()] == [name]


def test_snapshots_verb_lists_and_deletes_and_down_all_keeps_them(daytona):
    spec = _spec(free_port())
    name = _captured(daytona, spec)
    listed = run_cli("snapshots")
    assert listed.returncode == 0, listed.stderr
    [header, row] = [line.split("\t") for line in listed.stdout.splitlines()]
    assert header == ["name", "spec", "size", "created", "last used", "state"]
    assert row[0] == name and row[1] == "gpt-oss-20b" and row[-1] == "active"

    endpoint, *_ = _up(spec)
    assert run_cli("down", "--all", "--yes").returncode == 0
    assert [s.dto.name for s in daytona.snapshots.values()] == [name]
    assert endpoint.sandbox_id in daytona.deleted_ids

    plan = run_cli("up", "--provider", "daytona", "--port", str(spec.port), "--dry-run", "--json")
    assert json.loads(plan.stdout)["boot"] == f"warm: from snapshot {name} (H100)"

    assert run_cli("snapshots", "delete", name).returncode == 0
    assert daytona.snapshots == {}
    missing = run_cli("snapshots", "delete", name)
    assert missing.returncode == 2 and "`sandserve snapshots` lists" in as_typed(missing.stderr)
    plan = run_cli("up", "--provider", "daytona", "--port", str(spec.port), "--dry-run", "--json")
    assert json.loads(plan.stdout)["boot"].startswith("cold: no snapshot of this spec on H100")


def test_the_dry_run_without_a_key_says_it_cannot_tell(tmp_path: Path):
    plan = run_cli("up", "--provider", "daytona", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["boot"] == "unknown: A Daytona API key is not configured."
