"""How long the real `daytona` SDK's create() takes to see a new sandbox started, waiting on the API's event
stream versus polling (what it falls back to when the stream answers 404, as the stand-in's once did).

Both against the Daytona stand-in (tests/standins/daytona_api.py) in one run, side by side: the same number of
creates from an image, each going pending_build -> building_snapshot -> starting -> started, STEP seconds per
state. Prints the median and the worst create time of each and their ratio; asserts nothing.

    .venv/bin/python bench/bench_daytona_create_wait.py --creates 10 --step 0.05

Measured on the shared 2-core machine, one run each: `--creates 10 --step 0.05`: event stream median 0.161 s
(worst 0.175), polling 1.008 s (worst 1.012): 6.3x; `--creates 5 --step 0.3`: 0.916 s against 1.007 s (1.1x).
The SDK polls once a second, so the stream saves up to a second per wait: little against a GPU boot, but the
stand-in now drives the SDK down the path it takes against the service.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daytona import CreateSandboxFromImageParams, Daytona, DaytonaConfig
from standins.daytona_api import DaytonaStandin


def create_times(event_stream: bool, creates: int, step: float) -> list[float]:
    with DaytonaStandin(state_step_seconds=step, event_stream=event_stream) as api:
        client = Daytona(DaytonaConfig(api_key=api.api_key, api_url=api.url, target="us"))
        times = []
        for _ in range(creates):
            started = time.perf_counter()
            sandbox = client.create(CreateSandboxFromImageParams(image="python:3.12-slim"), timeout=60)
            times.append(time.perf_counter() - started)
            client.delete(sandbox)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=10)
    parser.add_argument("--step", type=float, default=0.05, help="seconds in each state before started")
    args = parser.parse_args()
    floor = 3 * args.step
    rows = {}
    for label, stream in (("event stream", True), ("polling", False)):
        rows[label] = create_times(stream, args.creates, args.step)
    print(
        f"{args.creates} creates each, {args.step:g} s per state "
        f"(a create cannot be shorter than {floor:g} s)"
    )
    for label, times in rows.items():
        print(f"  {label:13s} median {statistics.median(times):6.3f} s   worst {max(times):6.3f} s")
    ratio = statistics.median(rows["polling"]) / statistics.median(rows["event stream"])
    print(f"  polling / event stream (median): {ratio:.2f}x")


if __name__ == "__main__":
    main()
