"""What `sandserve top` draws, in the spirit of htop and nvtop: a header line, one row per endpoint (a fleet's
autoscaler and workers under its gateway), columns that come and go with the terminal's width, a redraw every
interval, and `q` or Ctrl-C to leave. Into a pipe: tab-separated readings under a header line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import click

from sandserve.cli.tables import Cell, Column, render_table, tab_separated

_STATE_STYLES = {
    "ready": "green",
    "degraded": "yellow",
    "booting": "yellow",
    "failed": "red",
    "dead": "red",
    "down": "dim",
    "no reading": "red",
}

#: Left out from the lowest drop_order up as the terminal narrows; at 80 columns: id, state, run, queue,
#: out tok/s, req/s and the note (an autoscaler's decision, a failed reading's cause).
TOP_COLUMNS = (
    Column("id", keep=True),
    Column("fleet", drop_order=0),
    Column("role", drop_order=3),
    Column("state", style=_STATE_STYLES.get),
    Column("run", number=True, drop_order=10),
    Column("queue", number=True, drop_order=9),
    Column("KV", number=True, drop_order=6),
    Column("hit", number=True, drop_order=4),
    Column("in tok/s", number=True, drop_order=5),
    Column("out tok/s", number=True, drop_order=11),
    Column("req/s", number=True, digits=1, drop_order=8),
    Column("gateway", drop_order=2),
    Column("errs", number=True, drop_order=1),
    Column("age", drop_order=0),
    Column("note", cut=True, drop_order=7),
)


def _share(value: float | None) -> str | None:
    return None if value is None else f"{value:.0%}"


def _age(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _gateway(row: Any) -> str | None:
    if row.role == "gateway":
        if row.workers_healthy is None:
            return None
        errors = f", {row.error_responses} 4xx/5xx" if row.error_responses else ""
        return f"{row.workers_healthy} healthy{errors}"
    if row.role == "worker" and (row.gateway_healthy is not None or row.gateway_load is not None):
        health = {True: "healthy", False: "UNHEALTHY", None: "?"}[row.gateway_healthy]
        return health if row.gateway_load is None else f"{health}, load {row.gateway_load}"
    return None


def top_rows(rows: list[Any], *, tree: bool) -> list[list[Cell]]:
    """One list of cells per reading, in TOP_COLUMNS' order; ``tree``: a fleet's members drawn under it."""
    cells: list[list[Cell]] = []
    for index, row in enumerate(rows):
        name = row.id
        if tree and row.role in ("worker", "autoscaler"):
            after = rows[index + 1] if index + 1 < len(rows) else None
            last = after is None or after.fleet != row.fleet or after.role not in ("worker", "autoscaler")
            name = ("└ " if last else "├ ") + row.id
        state = "no reading" if row.state == "ready" and not row.ok and row.error else row.state
        cells.append(
            [
                name,
                row.fleet,
                row.role,
                state,
                row.running,
                row.queued,
                _share(row.token_usage),
                _share(row.cache_hit_rate),
                row.prompt_tokens_per_s,
                row.generation_tokens_per_s,
                row.requests_per_s,
                _gateway(row),
                row.failed_readings or None,
                _age(row.age_s),
                # On a terminal an autoscaler's decision has a line of its own, under the table.
                row.error if tree else (row.note or row.error),
            ]
        )
    return cells


def top_screen(snapshot: Any, *, width: int, interval: float | None = None) -> Any:
    """One frame: the header line, the table drawn to ``width``, and each fleet's autoscaler decision."""
    from rich.console import Group
    from rich.text import Text

    header = Text(time.strftime("sandserve top  %H:%M:%S", time.localtime(snapshot.at)), style="bold")
    header.append(f"  {_counts(snapshot.rows)}", style="")
    if interval is not None:
        header.append(f"   every {interval:g} s, q or Ctrl-C: quit", style="dim")
    header.truncate(width, overflow="ellipsis")  # one line, as htop's: the live screen crops, never wraps
    parts: list[Any] = [header]
    if snapshot.notice:
        parts.append(Text(snapshot.notice, style="yellow"))
    parts.append(render_table(TOP_COLUMNS, top_rows(snapshot.rows, tree=True), width=width))
    for row in snapshot.rows:
        if row.role == "autoscaler":
            line = Text(f"{row.fleet} autoscaler: ", style="bold")
            line.append(row.note or "no decision yet")
            line.truncate(width, overflow="ellipsis")
            parts.append(line)
    return Group(*parts)


def _counts(rows: list[Any]) -> str:
    def some(count: int, what: str) -> str:
        return f"{count} {what}" + ("" if count == 1 else "s")

    endpoints, fleets, workers = (len([row for row in rows if row.role == role]) for role in ROLES)
    counts = [some(endpoints, "endpoint")] if endpoints else []
    if fleets:
        counts.append(f"{some(fleets, 'fleet')} ({some(workers, 'worker')})")
    return ", ".join(counts) or "nothing up"


ROLES = ("endpoint", "gateway", "worker")


def print_once(snapshot: Any) -> None:
    """`top --once`: the frame on a terminal, tab-separated lines into a pipe."""
    from sandserve.cli.console import out

    if out.is_terminal:
        out.print(top_screen(snapshot, width=out.width), soft_wrap=False)
    else:
        click.echo(tab_separated(TOP_COLUMNS, top_rows(snapshot.rows, tree=False)))


async def watch(model: Any, interval: float) -> None:
    """Redraw every ``interval`` seconds until `q` (or Ctrl-C, which the caller catches)."""
    from rich.live import Live

    from sandserve.cli.console import out

    if not out.is_terminal:  # a log or a pipe: one whole reading per refresh, not a redrawn screen
        while True:
            click.echo(tab_separated(TOP_COLUMNS, top_rows((await model.sample()).rows, tree=False)) + "\n")
            await asyncio.sleep(interval)

    def frame(snapshot: Any) -> Any:
        return top_screen(snapshot, width=out.width, interval=interval)

    async with quit_keys() as quit_pressed:
        with Live(frame(await model.sample()), console=out, screen=True, auto_refresh=False) as live:
            while not await quit_pressed(interval):
                live.update(frame(await model.sample()), refresh=True)


@contextlib.asynccontextmanager
async def quit_keys() -> AsyncIterator[Callable[[float], Any]]:
    """``await quit_pressed(seconds)``: waits up to ``seconds``, True as soon as `q` is pressed. The terminal
    is put in cbreak mode (keys arrive one by one; Ctrl-C still interrupts) and restored after."""
    pressed = asyncio.Event()

    async def quit_pressed(seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pressed.wait(), timeout=seconds)
        return pressed.is_set()

    if not sys.stdin.isatty():
        yield quit_pressed
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def read_key() -> None:
        keys = os.read(fd, 32)
        if not keys:  # the terminal closed
            loop.remove_reader(fd)
        if b"q" in keys.lower():
            pressed.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, read_key)
    try:
        yield quit_pressed
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
