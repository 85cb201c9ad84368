"""How long the local pipeline takes: `up` to ready for the tiny model (engine build cached), and the build.

    .venv/bin/python bench/bench_boot.py                 # boots only (seconds)
    .venv/bin/python bench/bench_boot.py --build         # plus a from-scratch llama-server build (minutes)

Prints figures; asserts nothing. Uses a temporary state directory, never your ledger.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from rich.console import Console
from rich.table import Table


def time_boots(runs: int) -> list[tuple[float, dict[str, float]]]:
    from sandserve.serve import lifecycle
    from sandserve.serve.ledger import Registry
    from sandserve.serve.resolve import resolve_spec

    boots = []
    for _ in range(runs):
        started = time.perf_counter()
        endpoint = lifecycle.up(resolve_spec(provider="local"))
        elapsed = time.perf_counter() - started
        phases = {step["phase"]: step["seconds"] for step in endpoint.info["boot_timeline"]}
        registry = Registry()
        lifecycle.down(registry.get(endpoint.id), registry)
        boots.append((elapsed, phases))
    return boots


def time_build() -> float:
    """Seconds for a from-scratch build in a temporary cache (the source tarball reused if downloaded)."""
    from sandserve.engines import llamacpp_build

    cached_sdist = llamacpp_build.sdist_path()
    with tempfile.TemporaryDirectory(prefix="sandserve-bench-build-") as cache:
        os.environ["SANDSERVE_CACHE_DIR"] = cache
        if cached_sdist.exists():
            target = llamacpp_build.sdist_path()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cached_sdist, target)
        started = time.perf_counter()
        llamacpp_build.ensure_llama_server()
        build_s = time.perf_counter() - started
        del os.environ["SANDSERVE_CACHE_DIR"]
    return build_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="boots to time (default 5)")
    parser.add_argument("--build", action="store_true", help="also time a from-scratch engine build")
    args = parser.parse_args()
    console = Console()

    from sandserve.engines.llamacpp_build import ensure_llama_server
    from sandserve.engines.tinymodel import ensure_tiny_model

    ensure_llama_server()
    ensure_tiny_model()
    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as state:
        os.environ["SANDSERVE_STATE_DIR"] = state
        boots = time_boots(args.runs)

    table = Table(title=f"`up` to ready, tiny model, {args.runs} boots (build cached)")
    table.add_column("run", justify="right")
    table.add_column("up -> ready (s)", justify="right")
    phase_names = list(boots[0][1])
    for name in phase_names:
        table.add_column(f"{name} at (s)", justify="right")
    for index, (elapsed, phases) in enumerate(boots, 1):
        table.add_row(
            str(index), f"{elapsed:.3f}", *(f"{phases.get(name, float('nan')):.3f}" for name in phase_names)
        )
    console.print(table)
    times = [elapsed for elapsed, _ in boots]
    console.print(f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s")

    from sandserve.engines.llamacpp_build import recorded_build_seconds

    recorded = recorded_build_seconds()
    if recorded is not None:
        console.print(f"llama-server build: {recorded:.0f} s, recorded when the cached binary was built")
    if args.build:
        console.print("building llama-server from scratch in a temporary cache (minutes) ...")
        build_s = time_build()
        console.print(
            f"llama-server build (source already downloaded): {build_s:.0f} s on {os.cpu_count()} cores"
        )
    elif recorded is None:
        console.print("build time: not recorded for this cached binary; --build times a from-scratch build")


if __name__ == "__main__":
    main()
