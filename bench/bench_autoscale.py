"""Autoscaling with real local workers: how fast the fleet grows under a queue, and what scale events cost.

    .venv/bin/python bench/bench_autoscale.py                # 6 clients, 48-token replies, short delays
    .venv/bin/python bench/bench_autoscale.py --gateway smg

One run, four scale events, measured side by side:
1. scale up: a sustained load (more clients than a worker's slots) on a fleet of --min 1 --max 2: seconds from
   the first look that finds requests queued (the engine's own load, as the autoscaler reads it) to the new
   worker serving a request (its own metrics count one), and how much of that the up-delay accounts for;
2. scale down: load stops; seconds until the fleet is back at --min (down delay + drain);
3. a worker killed (SIGKILL) under load on a fleet of --min 2 --max 2: seconds until its replacement serves;
4. scale to zero and back (--min 0): a request sent to the empty fleet; its latency (the cold start as the
   client sees it) and the cold start the autoscaler records.
Every request sent during all four is counted: goal 0 failed. Uses a temporary state directory.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sandserve.fleet.routing_bench import random_text


def fresh_prompt(rng: random.Random) -> str:
    """A prompt no earlier one shares a prefix with: cache_aware sends a repeated prefix to the worker that
    holds it, however long its queue (below --balance-abs-threshold 64), so a new worker would get nothing."""
    return random_text(rng, 200)


class Load:
    """``clients`` requests in flight at all times until stopped; counts answers and failures."""

    def __init__(self, endpoint, clients: int, max_tokens: int) -> None:
        self.endpoint, self.clients, self.max_tokens = endpoint, clients, max_tokens
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        openai = self.endpoint.openai(max_retries=0, timeout=300)
        rng = random.Random()
        while not self._stop.is_set():
            try:
                openai.chat.completions.create(
                    model=self.endpoint.model,
                    messages=[{"role": "user", "content": fresh_prompt(rng)}],
                    max_tokens=self.max_tokens,
                    extra_body={"ignore_eos": True},
                )
                self.ok += 1
            except Exception as exc:
                self.failed.append(repr(exc)[:200])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def wait_for(condition: Callable[[], object], timeout: float = 300.0, poll: float = 0.05) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("the fleet did not get there in time")
        time.sleep(poll)
    return time.perf_counter()


def run_events(args: argparse.Namespace) -> tuple[int, list[str], list[tuple[str, str, str]]]:
    rows: list[tuple[str, str, str]] = []
    failed: list[str] = []
    answered = 0
    from sandserve.fleet import ScalerSettings, fleet_down, fleet_status, fleet_up, load_fleet
    from sandserve.fleet.loads import read_load
    from sandserve.observe.loads import read_loads
    from sandserve.serve.ledger import Registry
    from sandserve.serve.resolve import resolve_spec

    spec = resolve_spec(provider="local")
    registry = Registry()

    def settings(low: int, high: int, **more: float) -> ScalerSettings:
        delays = {"up_delay": args.up_delay, "down_delay": args.down_delay, "interval": args.interval}
        return ScalerSettings(min_workers=low, max_workers=high, **{**delays, **more})

    def members(fleet_id: str) -> list[str]:
        return [member.endpoint_id for member in load_fleet(fleet_id).members]

    def served_any(endpoint_id: str) -> bool:
        endpoint = registry.get(endpoint_id).endpoint
        reading = read_loads([endpoint])[0] if endpoint else None
        # more prompt tokens than the readiness probe's few: it served a real request
        return bool(reading and (reading.counters.prompt_tokens or 0) > 100)

    # 1 + 2: scale up under a queue, back down when idle
    fleet = fleet_up(spec, 1, gateway=args.gateway, scaling=settings(1, 2))
    first = members(fleet.id)[0]
    first_endpoint = registry.get(first).endpoint
    with Load(fleet.endpoint, args.clients, args.max_tokens) as load:
        # more clients than the worker's slots: requests queue from the start of the load
        load_at = time.time()
        queued_at = wait_for(lambda: (seen := read_load(first_endpoint)) is not None and seen.queued > 0)
        wait_for(lambda: len(members(fleet.id)) == 2)
        second = next(m for m in members(fleet.id) if m != first)
        serving_at = wait_for(lambda: served_any(second))
        served_wall = time.time()
    decisions = fleet_status(fleet.id)[0].scaler["decisions"]
    decided = next(d["at"] for d in decisions if d["action"] == "up") - load_at
    joined = next(d["at"] for d in decisions if d["action"] == "joined") - load_at
    del queued_at, serving_at
    answered += load.ok
    failed += load.failed
    stopped_at = time.perf_counter()
    back_at = wait_for(lambda: len(members(fleet.id)) == 1)
    rows.append(("scale up: sustained queue began -> new worker served a request",
                 f"{served_wall - load_at:.2f} s",
                 f"scaler decided after {decided:.2f} s (up delay {args.up_delay:g} s, a look every "
                 f"{args.interval:g} s), worker joined the gateway after {joined:.2f} s"))  # fmt: skip
    rows.append(("scale down: load stopped -> back at --min 1",
                 f"{back_at - stopped_at:.2f} s",
                 f"down delay {args.down_delay:g} s, then drain"))  # fmt: skip
    fleet_down(fleet.id)

    # 3: a worker killed under load is replaced
    fleet = fleet_up(spec, 2, gateway=args.gateway, scaling=settings(2, 2))
    victim = members(fleet.id)[0]
    with Load(fleet.endpoint, args.clients, args.max_tokens) as load:
        wait_for(lambda: load.ok >= 4)
        os.kill(registry.get(victim).sandbox.pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        wait_for(lambda: victim not in members(fleet.id) and len(members(fleet.id)) == 2)
        fresh = [m for m in members(fleet.id) if registry.get(m).created_at > registry.get(victim).created_at]
        replaced_at = wait_for(lambda: all(served_any(m) for m in fresh))
        served = load.ok
        wait_for(lambda: load.ok >= served + args.clients)
    answered += load.ok
    failed += load.failed
    rows.append(("worker killed under load -> replacement served a request",
                 f"{replaced_at - killed_at:.2f} s",
                 f"{len(load.failed)} of {load.ok + len(load.failed)} requests failed"))  # fmt: skip
    fleet_down(fleet.id)

    # 4: to zero and back
    fleet = fleet_up(spec, 1, gateway=args.gateway, scaling=settings(0, 1, down_delay=1.0))
    wait_for(lambda: members(fleet.id) == [])
    time.sleep(0.5)
    started = time.perf_counter()
    try:
        fleet.endpoint.openai(max_retries=0, timeout=300).chat.completions.create(
            model=fleet.endpoint.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        answered += 1
    except Exception as exc:
        failed.append(repr(exc)[:200])
    cold = time.perf_counter() - started
    wait_for(lambda: (fleet_status(fleet.id)[0].scaler or {}).get("cold_starts"))
    recorded = fleet_status(fleet.id)[0].scaler["cold_starts"][0]
    rows.append(("request to an empty fleet (--min 0) answered", f"{cold:.2f} s",
                 f"the autoscaler's cold start: {recorded:.2f} s (held -> a new worker serves)"))  # fmt: skip
    fleet_down(fleet.id)
    return answered, failed, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--up-delay", type=float, default=1.0)
    parser.add_argument("--down-delay", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--gateway", default="sglang-router")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as scratch:
        os.environ["SANDSERVE_STATE_DIR"] = str(Path(scratch) / "state")
        try:
            answered, failed, rows = run_events(args)
        finally:
            from sandserve.serve.ledger import Registry
            from sandserve.serve.lifecycle import down

            registry = Registry()
            for record in registry.list():  # whatever a failed step left up
                down(record, registry)

    table = Table(title=f"autoscaling through {args.gateway}, local workers, {args.clients} clients, "
                        f"{args.max_tokens}-token replies")  # fmt: skip
    for column in ("event", "seconds", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console = Console(width=140)
    console.print(table)
    console.print(f"requests across all scale events: {answered} answered, {len(failed)} failed (goal 0)")
    for failure in failed[:5]:
        console.print(f"  {failure}")


if __name__ == "__main__":
    main()
