"""Colocated verbs: `sandserve exec [ID] -- CMD...` and `sandserve run [ID] SCRIPT.py`: code beside the
server.

On Daytona it runs inside the endpoint's own sandbox, where the server is http://localhost:8000 (no preview
proxy in between); locally it runs on this machine against the local server. ENDPOINT, OPENAI_BASE_URL, MODEL,
OPENAI_API_KEY and TOKEN are set for it; its output streams here; what it writes under out/ comes back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sandserve.cli._app import main, reports_errors, sigterm_as_interrupt
from sandserve.cli.choosing import chosen_endpoint, endpoint_option
from sandserve.cli.program import runnable

_OUTPUT_HELP = "Where the files the code writes under out/ land here (default: ./out)."


def _stream(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _report(result: object) -> None:
    from sandserve.cli.console import err

    files = getattr(result, "files", [])
    err.print(
        f"[dim]ran in {getattr(result, 'where', '?')}; exit code {getattr(result, 'exit_code', '?')}[/]"
    )
    for path in files:
        err.print(f"  [green]back:[/] {path}")


@main.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="[ID] -- CMD [ARGS...]")
@endpoint_option()
@click.option("--output", "output_dir", type=click.Path(file_okay=False), default="out", help=_OUTPUT_HELP)
@click.option("--timeout", type=click.FloatRange(min=1), help="Stop the command after this many seconds.")
@reports_errors
def exec_(
    words: tuple[str, ...], endpoint_option: str | None, output_dir: str, timeout: float | None
) -> None:
    """Run a command beside an endpoint's server (in its Daytona sandbox, or here for a local one).

    Example: sandserve exec -- python3 -c 'import os; print(os.environ["ENDPOINT"])'
    """
    from sandserve.serve.colocated import exec_argv

    endpoint_id, argv = _split(words)
    endpoint_id = chosen_endpoint(endpoint_id, endpoint_option)
    with sigterm_as_interrupt():
        result = exec_argv(endpoint_id, argv, output_dir=output_dir, on_output=_stream, timeout=timeout)
    _report(result)
    sys.exit(result.exit_code)


@main.command("run")
@click.argument("first")
@click.argument("second", required=False)
@click.argument("script_args", nargs=-1)
@endpoint_option()
@click.option(
    "--upload",
    "uploads",
    multiple=True,
    type=click.Path(exists=True),
    metavar="PATH",
    help="A file or folder to send with the script (repeat); it lands beside the script, by name.",
)
@click.option("--output", "output_dir", type=click.Path(file_okay=False), default="out", help=_OUTPUT_HELP)
@click.option("--timeout", type=click.FloatRange(min=1), help="Stop the script after this many seconds.")
@reports_errors
def run_(
    first: str,
    second: str | None,
    script_args: tuple[str, ...],
    endpoint_option: str | None,
    uploads: tuple[str, ...],
    output_dir: str,
    timeout: float | None,
) -> None:
    """Run a Python script beside an endpoint's server: `sandserve run [ID] SCRIPT.py [ARGS...]`.

    The script finds the server in ENDPOINT (and OPENAI_BASE_URL, MODEL, OPENAI_API_KEY, TOKEN), so the OpenAI
    SDK and the guide's clients work unchanged; files it writes under out/ come back to --output.
    """
    from sandserve.serve.colocated import run_script

    if second is not None and not first.endswith(".py") and Path(second).suffix == ".py":
        endpoint_id, script, args = first, second, script_args
    else:
        endpoint_id, script = None, first
        args = (*([second] if second is not None else []), *script_args)
    endpoint_id = chosen_endpoint(endpoint_id, endpoint_option)
    if not Path(script).is_file():
        raise click.BadParameter(f"{script!r} is not a file", param_hint="SCRIPT")
    with sigterm_as_interrupt():
        result = run_script(
            endpoint_id,
            script,
            args=args,
            upload=uploads,
            output_dir=output_dir,
            on_output=_stream,
            timeout=timeout,
        )
    _report(result)
    sys.exit(result.exit_code)


def _split(words: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """`[ID] -- CMD...`: click swallows the `--`, so the command is what follows it on the command line."""
    if "--" not in sys.argv:
        raise click.UsageError(runnable("Put the command after --: `sandserve exec [ID] -- CMD [ARGS...]`."))
    after = sys.argv[sys.argv.index("--") + 1 :]
    if not after or list(words[len(words) - len(after) :]) != after:
        raise click.UsageError(runnable("Nothing to run after --: `sandserve exec [ID] -- CMD [ARGS...]`."))
    before = words[: len(words) - len(after)]
    if len(before) > 1:
        raise click.UsageError(f"One endpoint id before --, not {len(before)}: {' '.join(before)}")
    return (before[0] if before else None), after
