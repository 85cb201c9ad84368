"""What `sandserve bench` shows: a progress line per level while it runs (done/total, elapsed, live TTFT
p50), the table of every level at the end, and after Ctrl-C what was measured, what was not, and the command
that measures the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sandserve.cli.tables import Cell, Column, show_table

#: Latencies in milliseconds; left out from the lowest drop_order up as the terminal narrows.
LEVEL_COLUMNS = (
    Column("level", keep=True),
    Column("done"),
    Column("req/s", number=True, digits=2, drop_order=9),
    Column("out tok/s", number=True, drop_order=12),
    Column("TTFT p50", number=True, drop_order=11),
    Column("TTFT p99", number=True, drop_order=7),
    Column("TPOT", number=True, digits=1, drop_order=10),
    Column("ITL p50", number=True, digits=1, drop_order=3),
    Column("E2E p50", number=True, drop_order=8),
    Column("E2E p99", number=True, drop_order=4),
    Column("goodput", drop_order=6),
    Column("queue", drop_order=1),
    Column("running", number=True, digits=1, drop_order=2),
    Column("KV max", number=True, drop_order=2),
    Column("cache hit", number=True, drop_order=5),
    Column("client CPU", number=True, drop_order=0),
)


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value:.0%}"


def level_cells(level: Any) -> list[Cell]:
    """One level's row, in LEVEL_COLUMNS' order."""
    m, load = level.metrics, level.load
    label = level.label + (" (cut)" if level.interrupted else "")
    if m is None:
        return [label, *([None] * (len(LEVEL_COLUMNS) - 1))]
    goodput = None if m.goodput is None else f"{m.goodput:.2f} ({_pct(m.slo_attainment)})"
    queue = None
    if load is not None and load.queued_mean is not None:
        queue = f"{load.queued_mean:.1f}/{load.queued_max}"
    return [
        label,
        f"{m.completed}/{m.sent}",
        m.request_throughput,
        m.output_token_throughput,
        m.ttft.median,
        m.ttft.p99,
        m.tpot.mean,
        m.itl.median,
        m.e2e.median,
        m.e2e.p99,
        goodput,
        queue,
        None if load is None else load.running_mean,
        None if load is None else _pct(load.token_usage_max),
        None if load is None else _pct(load.cache_hit_rate),
        _pct(level.client_cpu),
    ]


def show_levels(levels: Sequence[Any], *, report_dir: str) -> None:
    show_table(
        LEVEL_COLUMNS,
        [level_cells(level) for level in levels],
        title="latencies in ms (TPOT: mean)",
        more=f"{report_dir}/report.md has everything",
    )


class LevelProgressView:
    """One line per level on stderr, redrawn as its requests finish and kept when the level ends. Without a
    terminal (a log, a pipe) a bar is invisible: one line as each level ends instead."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from sandserve.cli.console import err

        self._live = err.is_terminal
        self._progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[live]}"),
            console=err,
        )
        self._tasks: dict[str, Any] = {}
        self._ended: set[str] = set()

    def __enter__(self) -> LevelProgressView:
        if self._live:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live:
            self._progress.stop()

    def update(self, progress: Any) -> None:
        ttft = "-" if progress.ttft_p50_ms is None else f"{progress.ttft_p50_ms:,.0f} ms"
        live = f"TTFT p50 {ttft}" + (f"  failed {progress.failed}" if progress.failed else "")
        if not self._live:
            if progress.done == progress.total and progress.label not in self._ended:
                from sandserve.cli.console import err

                self._ended.add(progress.label)
                done = f"{progress.done}/{progress.total} in {progress.elapsed_s:.1f} s"
                err.print(f"  {progress.label}: {done}, {live}")
            return
        task = self._tasks.get(progress.label)
        if task is None:
            task = self._tasks[progress.label] = self._progress.add_task(
                progress.label, total=progress.total, live=live
            )
        self._progress.update(task, completed=progress.done, total=progress.total, live=live)


def interrupted_lines(result: Any, planned: Sequence[str], args: Sequence[str], mode: str) -> list[str]:
    """What Ctrl-C leaves: the levels measured (a cut one with its count), those not run, and the command
    that measures them (into another --output, so this run's report stays)."""
    from sandserve.cli.resume import command_line, without

    measured = [level for level in result.levels if not level.interrupted]
    cut = next((level for level in result.levels if level.interrupted), None)
    done_labels = [level.label for level in measured]
    left = [label for label in planned if label not in done_labels]
    lines = [f"measured: {', '.join(done_labels) or 'no level to the end'}"]
    if cut is not None:
        sent = len(cut.records) + cut.unfinished
        lines.append(f"cut short: {cut.label} ({len(cut.records)} of {sent} requests sent had finished)")
    if not left:
        return lines
    lines.append(f"not measured: {', '.join(left)}")
    rest = without(args, valued=("--concurrency", "--rate", "--output"), flags=("--sweep",))
    if mode == "sweep":
        again = [*rest, "--sweep"]
    else:
        values = [label.split("=", 1)[1].removesuffix("/s") for label in left]
        again = [*rest, "--rate" if mode == "rate" else "--concurrency", ",".join(values)]
    output = _output_of(args)
    lines.append(
        ("to run the sweep again: " if mode == "sweep" else "to measure the rest: ")
        + command_line([*again, "--output", f"{output}-rest"])
    )
    return lines


def _output_of(args: Sequence[str]) -> str:
    for index, arg in enumerate(args):
        if arg == "--output" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--output="):
            return arg.split("=", 1)[1]
    return "bench-results"
