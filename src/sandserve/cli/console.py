"""Terminal rendering shared by the CLI verbs: progress, boot logs, tables. Everything goes to stderr except
what a shell is meant to capture (export lines, JSON), which goes to stdout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from sandserve.masking import mask_text
from sandserve.serve.boot_events import BootEvents

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from sandserve.batch import BatchProgress

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class ConsoleBootEvents(BootEvents):
    """Shows boot as it happens: steps, the server's own log (dimmed), timed phases, the build bar."""

    def __init__(self, *, show_log: bool = True) -> None:
        self.show_log = show_log
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._tenths_shown = -1

    def status(self, message: str) -> None:
        self._end_progress()
        err.print(f"[bold cyan]::[/] {message}", soft_wrap=True)

    def log(self, text: str) -> None:
        if self.show_log:  # SGLang logs its server_args, api_key included: masked
            err.print(Text(mask_text(text.rstrip("\n")), style="dim"), soft_wrap=True)

    def phase(self, name: str, seconds: float) -> None:
        err.print(f"[green]  ✓ {name}[/] [dim]at {seconds:.1f} s[/]")

    def build_progress(self, done: int | None, total: int | None, message: str) -> None:
        if not err.is_terminal:
            self._build_progress_lines(done, total)
            return
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            err.print("[bold cyan]::[/] building llama-server from source (first run only, a few minutes)")
            self._progress = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=err,
            )
            self._progress.start()
            self._task = self._progress.add_task("compiling", total=total or None)
        assert self._task is not None
        self._progress.update(
            self._task, completed=done, total=total or None, description=(message or "compiling")[:40]
        )

    def _build_progress_lines(self, done: int | None, total: int | None) -> None:
        """Without a terminal (CI logs, pipes) a bar is invisible: a line at every tenth of the build
        instead."""
        if self._tenths_shown < 0:
            err.print("[bold cyan]::[/] building llama-server from source (first run only, a few minutes)")
            self._tenths_shown = 0
        if done and total and done * 10 // total > self._tenths_shown:
            self._tenths_shown = done * 10 // total
            err.print(f"  compiled {done}/{total} ({self._tenths_shown * 10} %)")

    def _end_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class BatchProgressView:
    """A live bar for a batch: requests done, tokens/s, cached share, errors."""

    def __init__(self, description: str = "requests") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(bar_width=12),  # the figures after it fit 80 columns
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[rates]}"),
            console=err,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=None, rates="")

    def __enter__(self) -> BatchProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, progress: BatchProgress, description: str | None = None) -> None:
        p = progress
        cached = p.cached_tokens / p.input_tokens if p.input_tokens else 0.0
        from sandserve.cli.numbers import short_number

        rates = (
            f"{short_number(p.input_tokens_per_s)} in, {short_number(p.output_tokens_per_s)} out tok/s  "
            f"cached {100 * cached:.0f}%"
            + (f"  errors {p.failed}" if p.failed else "")
            + (f"  no answer yet {p.unfinished}" if p.unfinished else "")
            + (
                f" yield {p.in_flight_limit}/{p.concurrency}"
                if p.in_flight_limit is not None and p.concurrency and p.in_flight_limit < p.concurrency
                else ""
            )
        )
        if description:
            self._progress.update(
                self._task, completed=p.done, total=p.total, rates=rates, description=description
            )
        else:
            self._progress.update(self._task, completed=p.done, total=p.total, rates=rates)


class DownloadProgressView:
    """One bar per file being downloaded (the classification corpus, on its first run)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> DownloadProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, name: str, done: int, total: int | None) -> None:
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name, total=total)
        self._progress.update(self._tasks[name], completed=done, total=total)
