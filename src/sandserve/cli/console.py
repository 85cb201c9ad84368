"""Terminal rendering shared by the CLI verbs: the two consoles and the progress bars (a boot's log is
``boot_view``'s). Everything goes to stderr except what a shell is meant to capture (export lines, JSON),
which goes to stdout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import TaskID

    from sandserve.batch import BatchProgress

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


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
