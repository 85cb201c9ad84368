"""The adapter's admission queues on their own: order by priority, reported in SGLang's shape; two
llama-servers' /metrics and /slots as one endpoint's."""

from __future__ import annotations

import asyncio

from sandserve.engines.admission import AdmissionQueue, queue_metrics, slots_from_command, with_queued
from sandserve.engines.merged_servers import merged_metrics, merged_slots
from sandserve.engines.priority import (
    GATEWAY_HEADER,
    request_fields,
    request_headers,
    sglang_flags,
    value_of,
    waiting_above,
    waiting_by_priority,
)
from sandserve.observe.prometheus import parse_metrics, total


async def _hold(queue: AdmissionQueue, priority: int, started: list[str], name: str, release: asyncio.Event):
    async with queue.admitted(priority):
        started.append(name)
        await release.wait()


def test_the_highest_priority_waiting_request_gets_the_next_slot_then_first_come_first_served():
    async def scenario() -> list[str]:
        queue, started = AdmissionQueue(2), []
        releases = {name: asyncio.Event() for name in ("n1", "n2", "low", "n3", "high", "n4")}
        tasks = []
        for name, priority in (("n1", 0), ("n2", 0), ("low", -1), ("n3", 0), ("high", 1), ("n4", 0)):
            tasks.append(asyncio.ensure_future(_hold(queue, priority, started, name, releases[name])))
            await asyncio.sleep(0)
        assert started == ["n1", "n2"] and queue.waiting() == {-1: 1, 0: 2, 1: 1}
        releases["n1"].set()
        await asyncio.sleep(0.01)
        assert started == ["n1", "n2", "high"]
        for event in releases.values():
            event.set()
        await asyncio.gather(*tasks)
        return started

    assert asyncio.run(scenario()) == ["n1", "n2", "high", "n3", "n4", "low"]


def test_a_request_that_gives_up_while_waiting_leaves_the_queue():
    async def scenario() -> None:
        queue, started = AdmissionQueue(1), []
        hold = asyncio.Event()
        first = asyncio.ensure_future(_hold(queue, 0, started, "first", hold))
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(_hold(queue, 0, started, "gone", asyncio.Event()))
        await asyncio.sleep(0)
        assert queue.waiting() == {0: 1}
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert queue.waiting() == {}
        hold.set()
        await first
        assert started == ["first"] and sum(queue.running.values()) == 0

    asyncio.run(scenario())


def test_the_queue_is_reported_in_sglangs_shape_and_read_back():
    async def scenario() -> str:
        queue, started = AdmissionQueue(1), []
        hold = asyncio.Event()
        tasks = [asyncio.ensure_future(_hold(queue, p, started, str(p), hold)) for p in (1, -1, -1, 0)]
        await asyncio.sleep(0)
        text = queue_metrics([queue])
        hold.set()
        await asyncio.gather(*tasks)
        return text

    text = asyncio.run(scenario())
    assert 'sandserve:num_queue_reqs{priority=""} 3' in text
    assert waiting_by_priority(text) == {-1: 2, 0: 1}
    assert waiting_above({-1: 2, 0: 1}, "low") == 1


def test_requests_waiting_for_a_slot_count_as_llama_servers_deferred_ones():
    """What top and the autoscaler read as queued: llama-server defers nothing while the adapter holds the
    requests back, so the adapter's waiting requests are added to llama-server's own gauge."""
    upstream = "llamacpp:requests_deferred 1\nllamacpp:requests_processing 1\n"

    async def scenario() -> tuple[str, str]:
        queue, started = AdmissionQueue(1), []
        idle = with_queued(upstream, [queue])
        hold = asyncio.Event()
        tasks = [asyncio.ensure_future(_hold(queue, 0, started, str(n), hold)) for n in range(4)]
        await asyncio.sleep(0)
        busy = with_queued(upstream, [queue, AdmissionQueue(1)])
        hold.set()
        await asyncio.gather(*tasks)
        return idle, busy

    idle, busy = asyncio.run(scenario())
    parsed = parse_metrics(busy)
    assert total(parsed, "llamacpp:requests_deferred") == 4.0  # its own 1 and the adapter's 3
    assert total(parsed, "llamacpp:requests_processing") == 1.0
    assert total(parse_metrics(idle), "llamacpp:requests_deferred") == 1.0
    assert 'sandserve:num_queue_reqs{priority=""} 3' in busy


def test_waiting_requests_by_priority_from_sglang_and_smg_metrics():
    sglang = (
        "# TYPE sglang:num_queue_reqs gauge\n"
        'sglang:num_queue_reqs{engine_type="unified",model_name="m",priority=""} 7.0\n'
        'sglang:num_queue_reqs{engine_type="unified",model_name="m",priority="-1"} 5.0\n'
        'sglang:num_queue_reqs{engine_type="unified",model_name="m",priority="0"} 2.0\n'
    )
    assert waiting_by_priority(sglang) == {-1: 5, 0: 2}
    smg = 'smg_scheduler_queue_depth{class="interactive"} 3\nsmg_scheduler_queue_depth{class="bulk"} 9\n'
    assert waiting_by_priority(smg) == {0: 3, -1: 9}
    # Priority scheduling off: SGLang's gauge has no priority label, so no reading by priority.
    assert waiting_by_priority('sglang:num_queue_reqs{model_name="m"} 4\n') is None


def test_what_a_request_carries_and_how_the_adapter_reads_it():
    assert request_fields("low") == {"priority": -1}
    assert request_headers("low") == {GATEWAY_HEADER: "bulk"}
    assert value_of({"priority": 3}, {}) == 3
    assert value_of({}, {GATEWAY_HEADER: " BULK "}) == -1
    assert value_of({}, {GATEWAY_HEADER: "nonsense"}) == 0  # as smg: an unknown class is the default
    assert value_of({"priority": "high"}, {}) == 0
    assert value_of(None, {}) == 0


def test_sglang_gets_priority_scheduling_unless_its_flags_rule_it_out():
    assert sglang_flags([]) == ["--enable-priority-scheduling", "--default-priority-value", "0"]
    assert sglang_flags(["--schedule-policy", "lpm"]) == []
    assert sglang_flags(["--schedule-policy=lof"]) != []
    assert sglang_flags(["--enable-priority-scheduling", "--schedule-low-priority-values-first"]) == []


def test_slots_are_read_from_llama_servers_command_line():
    assert slots_from_command(["llama-server", "-m", "x.gguf", "-np", "4"]) == 4
    assert slots_from_command(["llama-server", "--parallel=3"]) == 3
    assert slots_from_command(["llama-server"]) is None


def test_a_queue_gauge_by_priority_is_read_once_not_twice():
    from sandserve.observe.prometheus import parse_metrics, total

    text = (
        'sglang:num_queue_reqs{model_name="m",priority=""} 7\n'
        'sglang:num_queue_reqs{model_name="m",priority="-1"} 5\n'
        'sglang:num_queue_reqs{model_name="m",priority="0"} 2\n'
        'sglang:num_requests_total{model_name="m",priority="-1"} 40\n'
        'sglang:num_requests_total{model_name="m",priority="0"} 3\n'
    )
    samples = parse_metrics(text)
    assert total(samples, "sglang:num_queue_reqs") == 7
    assert total(samples, "sglang:num_requests_total") == 43


def test_the_two_llama_servers_metrics_are_added_up_as_one_endpoints():
    """Counters and gauges summed, the high-water mark the higher, averages recomputed from the sums; the
    first server's lines and comments kept in their order."""
    people = (
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
        "# TYPE llamacpp:prompt_tokens_total counter\n"
        "llamacpp:prompt_tokens_total 100\n"
        "llamacpp:prompt_seconds_total 1\n"
        "llamacpp:prompt_tokens_seconds 100\n"
        "llamacpp:n_tokens_max 300\n"
        "llamacpp:n_decode_total 10\n"
        "llamacpp:n_busy_slots_per_decode 1\n"
        "llamacpp:requests_processing 1\n"
    )
    batch = (
        "llamacpp:prompt_tokens_total 900\n"
        "llamacpp:prompt_seconds_total 3\n"
        "llamacpp:prompt_tokens_seconds 300\n"
        "llamacpp:n_tokens_max 200\n"
        "llamacpp:n_decode_total 30\n"
        "llamacpp:n_busy_slots_per_decode 3\n"
        "llamacpp:requests_processing 4\n"
        "llamacpp:requests_deferred 0\n"
    )
    merged = merged_metrics(people, batch)
    samples = parse_metrics(merged)
    assert total(samples, "llamacpp:prompt_tokens_total") == 1000
    assert total(samples, "llamacpp:prompt_tokens_seconds") == 250  # 1000 tokens in 4 s, not 100 + 300
    assert total(samples, "llamacpp:n_tokens_max") == 300
    assert total(samples, "llamacpp:n_busy_slots_per_decode") == 2.5  # (1 x 10 + 3 x 30) / 40
    assert total(samples, "llamacpp:requests_processing") == 5
    assert total(samples, "llamacpp:requests_deferred") == 0  # only the batch's: still there
    assert merged.splitlines()[:3] == [*people.splitlines()[:2], "llamacpp:prompt_tokens_total 1000"]


def test_the_batch_servers_slots_are_numbered_after_the_peoples():
    people = [{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]
    batch = [{"id": 0, "is_processing": True}, {"id": 1, "is_processing": True}]
    merged = merged_slots(people, batch)
    assert [slot["id"] for slot in merged] == [0, 1, 2, 3]
    assert batch[0]["id"] == 0  # the answers read are not changed
    assert merged_slots(people, {"error": "no slots"}) == people
