"""What `sandserve batch` prints at its end: the summary table, and after Ctrl-C what was done, what is left
and the command that sends the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandserve.cli.tables import Cell, Column, show_table

#: Latencies in seconds; left out from the lowest drop_order up as the terminal narrows.
SUMMARY_COLUMNS = (
    Column("requests", number=True),
    Column("ok", number=True),
    Column("failed", number=True),
    Column("left", number=True),
    Column("skipped", number=True, drop_order=1),
    Column("req/s", number=True, digits=1, drop_order=6),
    Column("in tok/s", number=True, drop_order=3),
    Column("out tok/s", number=True, drop_order=7),
    Column("cached", number=True, drop_order=4),
    Column("p50", number=True, digits=2, drop_order=5),
    Column("p90", number=True, digits=2, drop_order=2),
    Column("p99", number=True, digits=2, drop_order=2),
    Column("errors", cut=True, drop_order=0),
)


def summary_cells(summary: Any) -> list[Cell]:
    errors = ", ".join(f"{kind} {count}" for kind, count in summary.errors_by_kind.items())
    return [
        summary.requests,
        summary.succeeded,
        summary.failed,
        summary.unfinished,
        summary.skipped,
        summary.requests_per_s,
        summary.input_tokens_per_s,
        summary.output_tokens_per_s,
        f"{summary.cached_share:.0%}",
        summary.latency_p50_s,
        summary.latency_p90_s,
        summary.latency_p99_s,
        errors or None,
    ]


def show_batch_summary(summary: Any, output_path: Path) -> None:
    from sandserve.batch import summary_path

    show_table(
        SUMMARY_COLUMNS,
        [summary_cells(summary)],
        title="batch summary (this run; latency in s; left: no result yet)",
        more=f"{summary_path(output_path)} has everything",
    )


def tell_batch_interrupted(output_path: Path) -> None:
    """After Ctrl-C: the summary the run wrote, what is done and left, and the command that goes on."""
    from sandserve.batch import BatchSummary, summary_path
    from sandserve.cli.console import err
    from sandserve.cli.resume import command_line, this_command_args

    err.print("[yellow]interrupted[/]")
    try:
        summary = BatchSummary(**json.loads(summary_path(output_path).read_text()))
    except (OSError, ValueError, TypeError):  # stopped before the run began: nothing was sent
        summary = None
    if summary is not None:
        show_batch_summary(summary, output_path)
        finished = summary.skipped + summary.requests
        total = finished + summary.unfinished
        failed = f" ({summary.failed} with an error)" if summary.failed else ""
        err.print(
            f"{finished} of {total} requests done{failed}, {summary.unfinished} left; every answer so far is "
            f"in {output_path}: nothing was lost."
        )
    err.print(f"to send the rest: {command_line(this_command_args())}")
