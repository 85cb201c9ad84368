"""`sandserve bench` against the real local engine: a concurrency sweep on llama-server serving the tiny model
(two slots), with the server's own queue depth joined to each level, the report and its plots written.

The endpoint is brought up in a scratch state directory (the user's ledger is never touched) and taken
down at the end. With two slots, concurrency above two queues inside llama-server: TTFT rises with load and
`requests_deferred` shows the queue. Prints the per-level table and where the report is; asserts nothing.

    .venv/bin/python bench/bench_concurrency_sweep.py --levels 1,2,4,8 --requests 32 \\
        --output bench-results/sweep
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=32, help="requests per level")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--slo", default="ttft=200,tpot=10")
    parser.add_argument("--output", type=Path, default=Path("bench-results/sweep"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as scratch:
        os.environ["SANDSERVE_STATE_DIR"] = str(Path(scratch) / "state")
        from sandserve.observe.bench import BenchConfig, LoadPlan, run_bench_sync
        from sandserve.observe.datasets import random_prompts
        from sandserve.observe.metrics import parse_slo
        from sandserve.observe.report import level_row, write_report
        from sandserve.serve import lifecycle
        from sandserve.serve.ledger import Registry
        from sandserve.serve.resolve import resolve_spec

        endpoint = lifecycle.up(resolve_spec(provider="local"))
        try:
            levels = tuple(float(v) for v in args.levels.split(","))
            config = BenchConfig(
                LoadPlan("concurrency", levels, requests_per_level=args.requests),
                slo=parse_slo(args.slo),
                sample_interval_s=0.05,
            )
            result = run_bench_sync(endpoint, random_prompts(args.input_len, args.output_len), config).result
        finally:
            registry = Registry()
            lifecycle.down(registry.get(endpoint.id), registry)
    written = write_report(result, args.output)
    rows = [level_row(level) for level in result.levels]
    table = Table(*rows[0])
    for row in rows:
        table.add_row(*row.values())
    console = Console(width=220)
    console.print(table)
    for level in result.levels:
        for warning in level.warnings:
            console.print(f"{level.label}: {warning}")
    plots = [str(path) for kind, path in written.items() if kind not in ("json", "report")]
    console.print(f"report: {written['report']}  plots: {', '.join(plots)}")


if __name__ == "__main__":
    main()
