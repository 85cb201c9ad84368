"""The `sandserve` group and what every verb shares: errors shown as their message and exit code, signals."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from sandserve.errors import SandserveError

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A `kill` (SIGTERM) or a closed terminal (SIGHUP) cleans up like Ctrl-C: no server is left booting unseen."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def reports_errors(func: F) -> F:
    """Turn a SandserveError into its message on stderr and its exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SandserveError as exc:
            from sandserve.cli.console import err
            from sandserve.masking import mask_text

            err.print(f"[bold red]error:[/] {mask_text(exc.message)}")
            if exc.hint:
                err.print(f"  [yellow]->[/] {mask_text(exc.hint)}")
            if exc.exit_code == INTERRUPTED:
                exit_interrupted()
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            exit_interrupted()

    return wrapper  # type: ignore[return-value]


INTERRUPTED = 130


def exit_interrupted() -> NoReturn:
    """Exit 130 once an interrupt has been cleaned up after.

    Not through sys.exit: when the KeyboardInterrupt was raised inside code run by exec() (a dataclass being
    built during a lazy import, say), CPython remembers it as unhandled and re-kills itself with SIGINT at exit,
    even though it was caught, so the exit status would say "killed" instead of 130.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="sandserve")
def main() -> None:
    """Serve LLMs on GPU sandboxes with SGLang (or locally with llama.cpp), and use them."""
