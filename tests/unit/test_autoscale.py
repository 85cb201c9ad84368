"""The autoscaler's rule, decision by decision (no process: loads and the clock are given)."""

from __future__ import annotations

import pytest

from sandserve.errors import ConfigError
from sandserve.fleet.autoscale import FleetLoad, ScalerSettings, ScaleRule
from sandserve.fleet.loads import WorkerLoad


def rule(**settings: float) -> ScaleRule:
    return ScaleRule(
        ScalerSettings(**{"min_workers": 1, "max_workers": 3, "up_delay": 10, "down_delay": 60, **settings})
    )


def loads(*pairs: tuple[int, int] | None) -> dict[str, WorkerLoad | None]:
    return {f"w{i}": (WorkerLoad(*pair) if pair else None) for i, pair in enumerate(pairs)}


def test_queued_requests_add_a_worker_only_after_the_up_delay():
    scaler = rule()
    busy = FleetLoad(loads((2, 3)))
    assert scaler.decide(0, busy).action == "none"
    assert scaler.decide(9, busy).action == "none"
    decision = scaler.decide(10, busy)
    assert decision.action == "up" and "3 request(s) queued on 1 worker(s)" in decision.reason


def test_a_queue_that_clears_restarts_the_up_delay():
    scaler = rule()
    scaler.decide(0, FleetLoad(loads((2, 3))))
    scaler.decide(5, FleetLoad(loads((2, 0))))
    assert scaler.decide(12, FleetLoad(loads((2, 3)))).action == "none"
    assert scaler.decide(22, FleetLoad(loads((2, 3)))).action == "up"


def test_no_second_worker_while_one_boots_and_none_past_max():
    scaler = rule(max_workers=2)
    scaler.decide(0, FleetLoad(loads((2, 4))))
    assert scaler.decide(20, FleetLoad(loads((2, 4)), booting=1)).action == "none"
    at_max = scaler.decide(40, FleetLoad(loads((2, 4), (2, 4))))
    assert at_max.action == "none" and "--max 2" in at_max.reason


def test_below_min_adds_at_once_and_a_dead_worker_is_replaced():
    assert rule(min_workers=2).decide(0, FleetLoad(loads((0, 0)))).action == "up"
    decision = rule().decide(0, FleetLoad(loads((0, 0)), dead=["w9"]))
    assert decision.action == "replace" and decision.worker == "w9"


def test_an_idle_fleet_shrinks_after_the_down_delay_one_worker_at_a_time_to_min():
    scaler = rule()
    idle = FleetLoad(loads((0, 0), (0, 0), (0, 0)))
    assert scaler.decide(0, idle).action == "none"
    decision = scaler.decide(60, idle)
    assert decision.action == "down" and decision.worker == "w2" and "idle" in decision.reason
    assert scaler.decide(61, FleetLoad(loads((0, 0), (0, 0)), draining=1)).action == "none"
    assert scaler.decide(119, FleetLoad(loads((0, 0), (0, 0)))).action == "none"
    assert scaler.decide(120, FleetLoad(loads((0, 0), (0, 0)))).action == "down"
    assert scaler.decide(500, FleetLoad(loads((0, 0)))).action == "none"  # at --min 1


def test_never_removes_the_last_worker_while_anything_is_queued_or_unknown():
    scaler = rule(min_workers=0)
    for now in (0, 100, 1000):
        assert scaler.decide(now, FleetLoad(loads((0, 1)))).action != "down"
        assert scaler.decide(now, FleetLoad(loads(None))).action != "down"
    assert scaler.decide(1001, FleetLoad(loads((0, 0)))).action == "none"
    assert scaler.decide(1061, FleetLoad(loads((0, 0)))).action == "down"


def test_a_request_held_at_zero_boots_a_worker_at_once():
    decision = rule(min_workers=0).decide(0, FleetLoad({}, held=2))
    assert decision.action == "up" and "2 request(s) waiting" in decision.reason
    assert rule(min_workers=0).decide(0, FleetLoad({}, held=2, booting=1)).action == "none"


def test_a_refused_boot_backs_off_and_says_why():
    scaler = rule(min_workers=2, backoff=30)
    scaler.back_off(0, "GPU quota exceeded")
    decision = scaler.decide(10, FleetLoad(loads((0, 0))))
    assert decision.action == "none" and "backing off: GPU quota exceeded" in decision.reason
    assert scaler.decide(31, FleetLoad(loads((0, 0)))).action == "up"


def test_above_max_after_a_lower_bound_removes_the_least_busy():
    decision = rule(max_workers=1).decide(0, FleetLoad(loads((2, 0), (0, 0))))
    assert decision.action == "down" and decision.worker == "w1"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"min_workers": -1}, "--min must be 0 or more"),
        ({"min_workers": 3, "max_workers": 2}, "--max (2) must be at least --min (3)"),
        ({"min_workers": 0, "max_workers": 0}, "at least 1"),
        ({"interval": 0}, "interval must be above 0"),
        ({"up_delay": -1}, "up_delay cannot be negative"),
    ],
)
def test_bad_settings_are_refused_with_what_to_do(settings, message):
    with pytest.raises(ConfigError) as caught:
        ScalerSettings(**settings).check()
    assert message in caught.value.message and caught.value.hint


def test_settings_survive_the_ledger_and_ignore_unknown_keys():
    settings = ScalerSettings(min_workers=0, max_workers=5, up_delay=1.5)
    assert ScalerSettings.from_dict({**settings.as_dict(), "from_a_newer_version": 1}) == settings


def test_the_measured_boot_time_bounds_the_up_delay_and_keeps_idle_workers_as_long():
    # A worker that boots in 4 s (a warm boot, say): waiting the whole 10 s up-delay would make the delay,
    # not the boot, what keeps the queue waiting.
    scaler = rule()
    busy = FleetLoad(loads((2, 3)), boot_seconds=4.0)
    assert scaler.decide(0, busy).action == "none"
    decision = scaler.decide(4, busy)
    assert decision.action == "up" and "a worker boots in about 4 s (measured)" in decision.reason
    # A slow boot (a cold one of 300 s) does not stretch the up-delay...
    slow = rule()
    assert slow.decide(0, FleetLoad(loads((2, 3)), boot_seconds=300.0)).action == "none"
    assert slow.decide(10, FleetLoad(loads((2, 3)), boot_seconds=300.0)).action == "up"
    # ...but a worker idle for less than it takes to boot again is kept.
    idle = rule()
    quiet = FleetLoad(loads((0, 0), (0, 0)), boot_seconds=300.0)
    assert idle.decide(0, quiet).action == "none"
    assert idle.decide(60, quiet).action == "none"
    decision = idle.decide(300, quiet)
    assert decision.action == "down" and "about 300 s" in decision.reason
