"""What `sandserve fleet bench` prints at its end: one row per gateway and policy, side by side."""

from __future__ import annotations

import json
import statistics
from typing import Any

import click

from sandserve.cli.tables import Cell, Column, show_table

#: Times in seconds; left out from the lowest drop_order up as the terminal narrows.
BENCH_COLUMNS = (
    Column("gateway", keep=True),
    Column("policy", keep=True),
    Column("failed"),
    Column("cached", number=True, digits=3),
    Column("/ideal", number=True, digits=2, drop_order=5),
    Column("TTFT50", number=True, digits=3, drop_order=4),
    Column("TTFT95", number=True, digits=3, drop_order=2),
    Column("e2e50", number=True, digits=3, drop_order=3),
    Column("e2e95", number=True, digits=3, drop_order=1),
    Column("wall", number=True, digits=1, drop_order=0),
)


def bench_rows(runs: list[Any], ideal: float | None) -> list[dict[str, Any]]:
    """One row per (gateway, policy), its repeats pooled: what --json prints."""
    from sandserve.fleet.routing_bench import median, percentile

    groups: dict[tuple[str, str], list[Any]] = {}
    for run in runs:
        groups.setdefault((run.gateway, run.policy), []).append(run)
    rows = []
    for (gateway, policy), group in groups.items():
        ttft = [value for run in group for value in run.ttft_s]
        e2e = [value for run in group for value in run.e2e_s]
        share = statistics.mean(run.cached_share for run in group)
        rows.append(
            {
                "gateway": gateway,
                "policy": policy,
                "runs": len(group),
                "requests": sum(run.requests for run in group),
                "failed": sum(run.failed for run in group),
                "cached_share": share,
                "of_ideal": share / ideal if ideal else None,
                "ttft_p50_s": median(ttft),
                "ttft_p95_s": percentile(ttft, 0.95),
                "e2e_p50_s": median(e2e),
                "e2e_p95_s": percentile(e2e, 0.95),
                "wall_s": statistics.mean(run.wall_s for run in group),
            }
        )
    return rows


def bench_cells(row: dict[str, Any]) -> list[Cell]:
    return [
        row["gateway"],
        row["policy"],
        f"{row['failed']}/{row['requests']}",
        row["cached_share"],
        row["of_ideal"],
        row["ttft_p50_s"],
        row["ttft_p95_s"],
        row["e2e_p50_s"],
        row["e2e_p95_s"],
        row["wall_s"],
    ]


def bench_title(ideal: float | None) -> str:
    ideal_text = f"{ideal:.3f}" if ideal is not None else "unknown"
    return f"ideal cached share for this traffic: {ideal_text}; times in seconds"


def print_bench(runs: list[Any], ideal: float | None, as_json: bool) -> None:
    rows = bench_rows(runs, ideal)
    if as_json:
        click.echo(json.dumps({"ideal_cached_share": ideal, "results": rows}, indent=2))
        return
    from sandserve.cli.console import err

    show_table(BENCH_COLUMNS, [bench_cells(row) for row in rows], title=bench_title(ideal))
    err.print(
        "[dim]cached = cached prompt tokens / prompt tokens; TTFT = time to first token; e2e = end to end; "
        "wall = the whole run[/]"
    )
