"""The `sandserve` group and what every verb shares: errors shown as their message and exit code, signals."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from sandserve.errors import (
    BatchIncompleteError,
    BootInterruptedError,
    ConfigError,
    FleetBootError,
    SandserveError,
)

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A `kill` (SIGTERM) or a closed terminal (SIGHUP) cleans up like Ctrl-C: no server is left booting
    unseen."""

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
        _tell_ledger_waits()
        try:
            return func(*args, **kwargs)
        except SandserveError as exc:
            from sandserve.cli.console import err
            from sandserve.cli.program import runnable
            from sandserve.masking import mask_text

            err.print(f"[bold red]error:[/] {runnable(mask_text(exc.message))}")
            if exc.hint:
                err.print(f"  [yellow]->[/] {runnable(mask_text(exc.hint))}")
            code = exit_code_for(exc)
            if code == INTERRUPTED:
                exit_interrupted()
            sys.exit(code)
        except KeyboardInterrupt:
            exit_interrupted()

    return wrapper  # type: ignore[return-value]


def _tell_ledger_waits() -> None:
    """Say so on stderr when the ledger is busy (the library only reports it to its events)."""
    from sandserve.serve import ledger

    class Told(ledger.LedgerEvents):
        def waiting(self, path: Any, seconds: float) -> None:
            from sandserve.cli.console import err

            err.print(
                f"[yellow]waiting[/] for the ledger {path}: another sandserve command holds its lock "
                f"(up to {ledger.BUSY_WAIT_SECONDS:.0f} s)..."
            )

    ledger.use_events(Told())


INTERRUPTED = 130
#: Exit codes by error class (the most specific class listed wins); any other SandserveError exits 1.
EXIT_CODES: dict[type[SandserveError], int] = {
    ConfigError: 2,
    BatchIncompleteError: 3,  # requests still without a result: a rerun sends them
    BootInterruptedError: INTERRUPTED,
}


def exit_code_for(error: SandserveError) -> int:
    """The process exit code for a library error: 2 for input to fix, 3 for a batch with requests still
    unanswered, 130 for an interrupt, else 1."""
    if isinstance(error, FleetBootError):
        return exit_code_for(error.cause)
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def exit_interrupted() -> NoReturn:
    """Exit 130 once an interrupt has been cleaned up after.

    Not through sys.exit: when the KeyboardInterrupt was raised inside code run by exec() (a dataclass being
    built during a lazy import, say), CPython remembers it as unhandled and re-kills itself with SIGINT at
    exit, even though it was caught, so the exit status would say "killed" instead of 130.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)


#: Each verb: the module of ``sandserve.cli`` that defines it, imported only when that verb runs, and its one
#: line for `--help`, kept here so that listing the verbs imports none of them (a unit test checks each line
#: against the verb's own help).
VERBS: dict[str, tuple[str, str]] = {
    "up": ("serve", "Bring a model up and print how to reach it."),
    "ls": ("serve", "List the endpoints in the ledger, with whether their server still runs."),
    "status": ("serve", "Show one endpoint: state, URL, boot timeline, KV pool, capabilities."),
    "logs": ("serve", "Print an endpoint's server log (keys and tokens in it masked)."),
    "env": ("serve", 'Print the export lines for an endpoint again (eval "$(sandserve env)").'),
    "down": ("serve", "Stop endpoints and delete their sandboxes."),
    "snapshots": (
        "snapshots",
        "List the golden snapshots that make a spec's next `up` boot warm (one per spec and GPU type).",
    ),
    "exec": (
        "colocated",
        "Run a command beside an endpoint's server (in its Daytona sandbox, or here for a local one).",
    ),
    "run": (
        "colocated",
        "Run a Python script beside an endpoint's server: `sandserve run [ID] SCRIPT.py [ARGS...]`.",
    ),
    "chat": ("use", "Ask the endpoint one question."),
    "tour": (
        "use",
        "The guide's tour against an endpoint: chat, streaming, reasoning effort, JSON schema, regex, EBNF, "
        "the tool-calling loop and the prefix cache, ending with a table of what this endpoint passed.",
    ),
    "batch": ("work", "Run an OpenAI batch file (JSONL) against the endpoint; OUT is resumable."),
    "classify": (
        "work",
        "The guide's workload: 273 passages of 13 books, classified by author, then indoors or outdoors.",
    ),
    "fleet": (
        "fleet",
        "Many endpoints behind one model gateway (sglang-router or smg) with cache-aware routing, as ONE "
        "endpoint; with --min/--max an autoscaler sizes it from the engines' own queues.",
    ),
    "top": (
        "observe",
        "What each endpoint (or each worker of a fleet) is doing now, from the servers' own load reports.",
    ),
    "bench": (
        "observe",
        "A serving benchmark of the endpoint: TTFT, TPOT, ITL, E2E (mean, p50, p90, p99), throughput, "
        "goodput, with the server's own queue depth, KV usage and cache hit rate joined to each load level.",
    ),
    "presets": ("getting_started", "List the model presets and what each one sets."),
    "demo": (
        "getting_started",
        "The main job: bring an endpoint up, ask it one question, show how to go further.",
    ),
    "engine": ("getting_started", "The local engine (llama.cpp's llama-server)."),
}
VERB_MODULES = {name: module for name, (module, _) in VERBS.items()}

#: Verbs that read, print and exit in a few milliseconds. While one runs (and `--help`), Python's cyclic
#: garbage collector stays paused: the tens of thousands of objects that importing click, rich and the ledger
#: create would otherwise make it walk them again and again (about 6 ms of a 100 ms `ls`). Every other verb
#: gets it back before its module is imported.
BRIEF_VERBS = frozenset({"ls", "env", "status", "presets"})


class SuggestingGroup(click.Group):
    """A group that answers a mistyped verb with the nearest ones ("did you mean")."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            suggestion = f" Did you mean {' or '.join(repr(word) for word in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{suggestion}")
        return super().resolve_command(ctx, args)


class VerbsOnDemand(SuggestingGroup):
    #: Set by the program's entry: whether it paused the collector, and whether it started a verb that is not
    #: brief (``BRIEF_VERBS``).
    _paused_collector = False
    ran_long_verb = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The entry of ``run`` and of scripts that call ``main()`` (a test's CliRunner calls ``main.main``):
        the collector is paused for a brief verb, and left as it was found."""
        self.ran_long_verb = False
        self._paused_collector = gc.isenabled()
        gc.disable()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._resume_collector()

    def _resume_collector(self) -> None:
        if self._paused_collector:
            self._paused_collector = False
            gc.enable()

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Usage lines and click's own hints name the program as the user can run it again."""
        if not args and "prog_name" not in kwargs:
            from sandserve.cli.program import program

            kwargs["prog_name"] = program()
        return super().main(*args, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERB_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in VERB_MODULES and cmd_name not in BRIEF_VERBS:
            self.ran_long_verb = True
            self._resume_collector()
        if cmd_name not in self.commands and cmd_name in VERB_MODULES:
            importlib.import_module(f"sandserve.cli.{VERB_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verbs and their lines as click lists them, from ``VERBS``: no verb's module is imported."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, verb_summary(name, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def verb_summary(name: str, limit: int) -> str:
    """A verb's line in `--help`, cut to ``limit`` characters as click cuts a command's own help."""
    return click.Command(name, help=VERBS[name][1]).get_short_help_str(limit)


@click.group(
    cls=VerbsOnDemand,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(package_name="sandserve")
def main() -> None:
    """Serve LLMs on GPU sandboxes with SGLang (or locally with llama.cpp), and use them."""


def run() -> None:
    """The program, as the console script and `python -m sandserve.cli` start it (``main`` stays the click
    group, for tests and scripts that call it and carry on after it).

    After a brief verb (or `--help`, or a usage error) the process ends at once, its output flushed, without
    tearing the interpreter down: freeing the objects of every module loaded, one by one, was 3 ms of a 78 ms
    `ls` on a terminal, and a brief verb leaves nothing else to clean up (no thread, no atexit handler, no
    file open for writing). Any other verb ends as Python ends, with what is still alive frozen first, so
    that the collector's passes at exit skip it (about 10 ms once rich and click are loaded).
    """
    try:
        main()
    except SystemExit as done:
        code = done.code
        if not main.ran_long_verb and (code is None or type(code) is int):
            _end_at_once(code or 0)
        gc.freeze()
        raise


def _end_at_once(code: int) -> None:
    """Flush stdout and stderr and end the process with ``code``; returns only when they cannot be flushed (a
    closed pipe), for Python's own exit to report it as it always does."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)
