"""What `sandserve batch` prints at its end: the summary table, and after Ctrl-C what was done, what is left
and the command that sends the rest; the same for `classify`, whose answers are kept as they come."""

from __future__ import annotations

import dataclasses
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


def with_kept(progress: Any, kept: int) -> Any:
    """A pass's progress counted over all its passages: those answered by an earlier run as done."""
    if not kept:
        return progress
    total = None if progress.total is None else progress.total + kept
    return dataclasses.replace(
        progress, done=progress.done + kept, skipped=progress.skipped + kept, total=total
    )


def answered_so_far(kept: Path) -> str:
    """``pass 1 - author: 120 of 273 answered, pass 2 - setting: not started``."""
    from sandserve.workloads.answers import progress

    passes = progress(kept)
    said = []
    for number, name in ((1, "author"), (2, "setting")):
        done = passes.get(name)
        state = f"{done['answered']} of {done['total']} answered" if done else "not started"
        said.append(f"pass {number} - {name}: {state}")
    return ", ".join(said)


def tell_classify_stopped(kept: Path, run_dir: Path, *, interrupted: bool) -> str:
    """Say what a stopped classification did and where its answers are; the command that goes on from them
    (the same one, with its --run-dir) is returned, for the caller to print or to hint."""
    from sandserve.cli.console import err
    from sandserve.cli.resume import command_line, this_command_args, without

    if interrupted:
        err.print("[yellow]interrupted[/]")
    if kept.exists():
        err.print(f"{answered_so_far(kept)}; every answer so far is kept in {kept}: nothing was lost.")
    again = command_line([*without(this_command_args(), valued=("--run-dir",)), "--run-dir", str(run_dir)])
    if interrupted:
        err.print(f"to go on from there: {again}")
    return again
