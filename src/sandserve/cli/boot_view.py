"""A boot as it happens, on the terminal: steps, the server's log (dimmed), timed phases, the build bar."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from sandserve.cli.console import err
from sandserve.masking import mask_text
from sandserve.serve.boot_events import BootEvents

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


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
