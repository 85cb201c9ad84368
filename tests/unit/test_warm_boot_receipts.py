"""Golden snapshot names (what makes a boot differ) and boot receipts (steps, differences, the slowest)."""

from __future__ import annotations

from sandserve.cli.receipts import receipt_lines
from sandserve.engines.sglang import SGLangEngine
from sandserve.providers.warmboot import WarmBootPlan, snapshot_key, snapshot_name, spec_key
from sandserve.results import BootPhase
from sandserve.serve.receipt import BootReceipt, differences, receipt_from
from sandserve.serve.resolve import resolve_spec

SGLANG_STEPS = SGLangEngine.receipt_steps  # the log phases SGLang reports, as receipt steps


def _spec(*flags: str, **overrides: object):
    return resolve_spec("gpt-oss-20b", provider="daytona", extra_args=flags, **overrides)


def test_the_name_changes_with_what_changes_a_boot_and_only_that():
    base = snapshot_name(_spec(), "H100")
    assert base.startswith("sandserve-") and base.endswith("-h100")
    assert snapshot_name(_spec(port=9000, auth="key", ttl_minutes=30), "H100") == base
    assert snapshot_name(_spec("--mem-fraction-static", "0.8"), "H100") != base
    assert snapshot_name(_spec("--revision", "abc123"), "H100") != base
    assert snapshot_name(_spec(image="lmsysorg/sglang:v0.5.13-cu130"), "H100") != base
    assert snapshot_name(_spec(context_length=65536), "H100") != base
    assert snapshot_name(resolve_spec("qwen3-8b", provider="daytona"), "H100") != base
    # One per GPU type; NVIDIA and AMD differ in the key itself, not only in the name's suffix.
    assert spec_key(_spec(), "H200") == spec_key(_spec(), "H100")
    assert spec_key(_spec(), "MI355X") != spec_key(_spec(), "H100")


def test_the_key_takes_the_gpu_vendor_and_count():
    values = dict(
        image="img", model="m", revision=None, engine="sglang", engine_args=["--x"], gpu_vendor="nvidia"
    )
    one = snapshot_key(**values, gpu_count=1)
    assert snapshot_key(**values, gpu_count=2) != one
    assert snapshot_key(**{**values, "gpu_vendor": "amd"}, gpu_count=1) != one
    assert snapshot_key(**{**values, "revision": "main"}, gpu_count=1) == one


def test_the_plan_line_says_warm_or_cold_and_why():
    warm = WarmBootPlan("sandserve-abc-h100", "H100", ("no snapshot of this spec on H200 yet",))
    assert (
        warm.line() == "warm: from snapshot sandserve-abc-h100 (H100); no snapshot of this spec on H200 yet"
    )
    cold = WarmBootPlan(None, reasons=("snapshot x failed (disk full)",))
    assert cold.line() == "cold: snapshot x failed (disk full)" and not cold.warm


def _marks(**seconds: float) -> list[BootPhase]:
    return [BootPhase(name.replace("_", " "), value) for name, value in seconds.items()]


COLD = _marks(
    sandbox_ready=60.0,
    weights_downloaded=150.0,
    weights_loaded=156.0,
    kv_cache_allocated=158.0,
    kernels_compiled=278.0,
    cuda_graphs_captured=287.4,
    server_ready=292.4,
    ready=293.4,
)
WARM = _marks(
    sandbox_ready=60.0,
    weights_downloaded=60.5,
    weights_loaded=66.5,
    kv_cache_allocated=68.5,
    kernels_compiled=72.5,
    cuda_graphs_captured=81.9,
    server_ready=86.9,
    ready=87.9,
)


def test_steps_are_the_time_between_marks_grouped_as_the_engine_says():
    receipt = receipt_from(COLD, SGLANG_STEPS, origin="cold", why="cold: no snapshot")
    assert [(s.phase, s.seconds) for s in receipt.steps] == [
        ("create", 60.0),
        ("weights", 90.0),
        ("load", 8.0),
        ("compile", 120.0),
        ("graphs", 9.4),
        ("warm-up", 5.0),
        ("first generation", 1.0),
    ]
    assert receipt.total == 293.4
    assert receipt.slowest() == "kernel caches missing: compiled for 120 s"
    assert BootReceipt.from_dict(receipt.to_dict()) == receipt


def test_a_warm_receipt_against_the_cold_one():
    cold = receipt_from(COLD, SGLANG_STEPS, origin="cold", why="cold: no snapshot")
    warm = receipt_from(
        WARM,
        SGLANG_STEPS,
        origin="warm",
        why="warm: from snapshot s (H100)",
        restored=frozenset({"weights", "compile"}),
    )
    changes = differences(warm, cold)
    assert changes["weights"] == -89.5 and changes["compile"] == -116.0 and changes["total"] == -205.5
    assert warm.slowest() == "sandbox created from the snapshot: 60 s"
    lines = receipt_lines(warm, cold)
    assert all(len(line) <= 80 for line in lines)
    assert lines[0] == "boot receipt: warm, 88 s from `up` to the first generation"
    assert any("weights" in line and "(on disk: no download)" in line for line in lines)
    assert any("compile" in line and "(caches restored: no compile)" in line for line in lines)
    assert "  -205.5 s against the last boot of this spec (cold, 293 s)" in lines


def test_a_step_the_new_boot_skipped_shows_as_skipped():
    previous = BootReceipt("cold", "", (BootPhase("create", 5.0), BootPhase("compile", 3.0)))
    receipt = BootReceipt("warm", "", (BootPhase("create", 4.0),))
    assert differences(receipt, previous) == {"create": -1.0, "compile": -3.0, "total": -4.0}
    assert any(
        line.split() == ["compile", "skipped", "-3.0", "s"] for line in receipt_lines(receipt, previous)
    )
