"""Verbs that use an endpoint: chat and tour."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from sandserve.cli._app import main, reports_errors
from sandserve.cli.choosing import chosen_endpoint, endpoint_option
from sandserve.cli.program import runnable
from sandserve.cli.values import TEMPERATURE, read_text_file

if TYPE_CHECKING:
    from sandserve.cli.tables import Column

# --- using an endpoint ----------------------------------------------------------------------------------


@main.command()
@click.argument("prompt")
@endpoint_option("endpoint_id")
@click.option("--system", help="A system message sent before the prompt.")
@click.option(
    "--max-tokens",
    type=click.IntRange(1, 10_000_000),
    default=1024,
    show_default=True,
    help="Budget for reasoning + answer.",
)
@click.option("--stream", is_flag=True, help="Print the reply as it arrives.")
@click.option(
    "--reasoning-effort",
    type=click.Choice(["low", "medium", "high"]),
    help="How hard the model thinks (mapped per model family; refused where there is no dial).",
)
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A JSON schema file: the answer is constrained to it.",
)
@click.option("--regex", help="A regular expression the whole answer must match.")
@click.option(
    "--ebnf",
    "ebnf_file",
    type=click.Path(exists=True, dir_okay=False),
    help="An EBNF (GBNF) grammar file the answer must follow (start rule: root).",
)
@click.option(
    "--temperature", type=TEMPERATURE, help="Sampling temperature, 0-2 (server default if left out)."
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also show cached/prompt tokens, the finish reason, and how options were mapped.",
)
@reports_errors
def chat(
    prompt: str,
    endpoint_id: str | None,
    system: str | None,
    max_tokens: int,
    stream: bool,
    reasoning_effort: str | None,
    schema_file: str | None,
    regex: str | None,
    ebnf_file: str | None,
    temperature: float | None,
    verbose: bool,
) -> None:
    """Ask the endpoint one question. The answer goes to stdout; the reasoning (shown apart, dimmed) and the
    --verbose figures go to stderr."""

    from rich.text import Text

    from sandserve.cli.console import err
    from sandserve.client.chat import ChatOptions, ChatReply, Delta, ask, ask_streaming
    from sandserve.client.connect import connect
    from sandserve.client.constrained import pick_constraint

    constraint = pick_constraint(
        regex=regex,
        ebnf=read_text_file(ebnf_file, "--ebnf") if ebnf_file else None,
        json_schema=read_text_file(schema_file, "--schema") if schema_file else None,
    )
    endpoint = connect(endpoint_id)
    options = ChatOptions(
        system=system,
        max_tokens=max_tokens,
        reasoning_effort=reasoning_effort,  # type: ignore[arg-type]
        constraint=constraint,
        temperature=temperature,
    )
    if endpoint.serves_random_model:
        from sandserve.engines.tinymodel import DISCLAIMER

        err.print(Text(f"(tiny model: {DISCLAIMER})", style="dim"))
    reply: ChatReply | None = None
    if stream:
        channel = None
        for event in ask_streaming(endpoint, prompt, options):
            if isinstance(event, Delta):
                if event.channel != channel:
                    _start_channel(event.channel, first=channel is None)
                    channel = event.channel
                if event.channel == "reasoning":
                    err.print(Text(event.text, style="dim italic"), end="")
                else:
                    click.echo(event.text, nl=False)
            else:
                reply = event
        if channel == "reasoning":
            err.print("")
        click.echo("")
    else:
        reply = ask(endpoint, prompt, options)
        if reply.reasoning:
            _start_channel("reasoning", first=True)
            err.print(Text(reply.reasoning.strip(), style="dim italic"))
            _start_channel("content", first=False)
        click.echo(reply.content)
    assert reply is not None
    if verbose:
        for note in reply.notes:
            err.print(Text(f"note: {note}", style="yellow"))
        err.print(
            Text(
                f"{reply.cache}; {reply.completion_tokens} completion tokens; "
                f"finish_reason={reply.finish_reason}",
                style="dim",
            )
        )
    if reply.finish_reason == "length":
        err.print(Text(f"(cut at --max-tokens {max_tokens}: raise it for a complete answer)", style="yellow"))


def _start_channel(channel: str, *, first: bool) -> None:
    from sandserve.cli.console import err

    if not first:
        err.print("")
    label = "reasoning" if channel == "reasoning" else "answer"
    err.print(f"[bold]{label}:[/]")


@main.command()
@click.argument("endpoint_id", metavar="[ID]", required=False)
@endpoint_option()
@reports_errors
def tour(endpoint_id: str | None, endpoint_option: str | None) -> None:
    """The guide's tour against an endpoint: chat, streaming, reasoning effort, JSON schema, regex, EBNF, the
    tool-calling loop and the prefix cache, ending with a table of what this endpoint passed."""
    from rich.text import Text

    from sandserve.cli.console import out
    from sandserve.client.connect import connect
    from sandserve.workloads.tour import TourStep, run_tour, settings_for

    endpoint = connect(chosen_endpoint(endpoint_id, endpoint_option))
    out.print(f"[bold]tour of {endpoint.id}[/] ({endpoint.engine}, {endpoint.model}) at {endpoint.url}")
    if settings_for(endpoint).random_model:
        from sandserve.engines.tinymodel import DISCLAIMER

        out.print(Text(f"tiny model: {DISCLAIMER}; the tool call is forced", style="yellow"))
    steps: list[TourStep] = []
    for step in run_tour(endpoint):
        steps.append(step)
        out.print("")
        out.print(f"[bold]{step.title}[/]  {_styled_status(step.status)}")
        for line in step.lines:
            out.print(Text("  " + runnable(line), style="dim"))
    from sandserve.cli.tables import show_table

    out.print("")
    out.print("[bold]what this endpoint passed[/]")  # part of the tour's story, also into a pipe
    show_table(
        tour_columns(),
        [[step.title, _STATUS_LABELS[step.status], runnable(step.note)] for step in steps],
        more="each step's lines above have everything",
    )
    if any(step.status == "failed" for step in steps):
        sys.exit(1)


#: How each step's status reads ("unavailable": the engine or the model has no such feature), and its colour.
_STATUS_LABELS = {"passed": "passed", "failed": "failed", "unavailable": "not available"}
_STATUS_COLOURS = {"passed": "green", "failed": "red", "not available": "dim"}


def tour_columns() -> tuple[Column, ...]:
    """The tour's closing table: each feature whole, its detail shortened to the terminal's width."""
    from sandserve.cli.tables import Column

    return (
        Column("feature", keep=True),
        Column("result", style=_STATUS_COLOURS.get),
        Column("detail", cut=True),
    )


def _styled_status(status: str) -> str:
    label = _STATUS_LABELS[status]
    return f"[{_STATUS_COLOURS[label]}]{label}[/]"
