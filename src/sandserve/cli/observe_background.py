"""``bench --background``: people's requests while a batch runs, the phases side by side."""

from __future__ import annotations

from typing import Any

import click

from sandserve.cli.tables import Cell, Column, show_table
from sandserve.observe.background import BATCH_ALONE, IDLE, BackgroundResult, Phase

#: Milliseconds and tokens/s; the ratios to idle / alone left out first as the terminal narrows.
BACKGROUND_COLUMNS = (
    Column("phase", keep=True),
    Column("TTFT p50", number=True),
    Column("TTFT p99", number=True),
    Column("vs idle", number=True, digits=1, drop_order=3),
    Column("E2E p50", number=True, drop_order=1),
    Column("E2E p99", number=True),
    Column("batch tok/s", number=True),
    Column("vs alone", number=True, digits=2, drop_order=2),
    Column("in flight", drop_order=0),
)


def background_cells(result: BackgroundResult) -> list[list[Cell]]:
    rows: list[list[Cell]] = []
    for phase in result.phases:
        m = phase.interactive
        rows.append(
            [
                phase.name,
                m.ttft.median if m else None,
                m.ttft.p99 if m else None,
                result.ttft_p99_ratio(phase.name) if phase.name not in (IDLE, BATCH_ALONE) else None,
                m.e2e.median if m else None,
                m.e2e.p99 if m else None,
                phase.batch_tokens_per_s,
                result.batch_ratio(phase.name) if phase.name not in (IDLE, BATCH_ALONE) else None,
                _in_flight(phase),
            ]
        )
    return rows


def show_background(result: BackgroundResult, more: str) -> None:
    show_table(
        BACKGROUND_COLUMNS,
        background_cells(result),
        title="people's requests while a batch runs (ms; batch: prompt + output tokens/s)",
        more=more,
    )


def _in_flight(phase: Phase) -> str:
    if phase.batch_priority is None:
        return "-"
    if phase.batch_lowest_in_flight is None:
        return "fixed"
    return f">= {phase.batch_lowest_in_flight}"


def run_background(endpoint_id: str | None, options: dict[str, Any], interactive: Any) -> None:
    """``bench --background FILE|random``: the four phases, a table, the report; exit 1 when a phase's
    interactive requests failed."""
    import asyncio
    import sys
    from pathlib import Path

    from sandserve.batch.files import streamed_requests
    from sandserve.cli.console import err, out
    from sandserve.client.connect import connect
    from sandserve.errors import BatchInputError
    from sandserve.observe.background import (
        BackgroundBench,
        BackgroundPlan,
        batch_from_prompts,
        endless_batch,
    )
    from sandserve.observe.background_report import write_background_report
    from sandserve.observe.bench_results import public_endpoint
    from sandserve.observe.datasets import random_prompts

    rates = options["rate_values"]
    if len(rates) > 1 or options["concurrency_text"] or options["sweep"]:
        raise click.UsageError("--background takes one --rate (interactive requests per second).")
    plan = BackgroundPlan(
        rate=rates[0] if rates else 0.5,
        requests=options["requests"] or 20,
        batch_concurrency=options["max_concurrency"],
        warmup=options["warmup"],
        seed=options["seed"],
    )
    background = options["background"]
    if background == "random":
        words = 4 * options["input_len"]
        supply = batch_from_prompts(random_prompts(words, options["output_len"], seed=plan.seed + 1))
        batch_name = f"random ({words} words, {options['output_len']} output tokens)"
    else:
        path = Path(background)
        if not path.is_file():
            raise BatchInputError(path, "no such file" if not path.exists() else "not a regular file")
        with streamed_requests(path, set()) as requests:
            supply = endless_batch(list(requests))
        batch_name = f"{path} (cycled)"
    endpoint = connect(endpoint_id)
    err.print(
        f"[bold cyan]::[/] {plan.requests} interactive requests per phase at {plan.rate}/s on "
        f"{endpoint.model}, with a batch of {batch_name} in the background (about "
        f"{4 * plan.expected_s:.0f} s or more)"
    )
    bench = BackgroundBench(
        endpoint, interactive, supply, batch_name, plan, public_endpoint=public_endpoint(endpoint)
    )
    interrupted = False
    try:
        result = asyncio.run(bench.run(lambda phase: err.print(f"  {phase.name}: {phase.wall_s:.0f} s")))
    except KeyboardInterrupt:  # the phases finished so far are written all the same
        result, interrupted = bench.result, True
        err.print(f"[yellow]interrupted:[/] writing what was measured ({len(result.phases)} of 4 phases)")
    written = write_background_report(result, options["output_dir"])
    show_background(result, more=f"{written['json']} has everything")
    out.print(f"report: {written['report']}   plot: {written['plot']}   data: {written['json']}")
    out.print(result.headline())
    if interrupted:
        from sandserve.cli._app import exit_interrupted

        sys.stdout.flush()
        exit_interrupted()
    if any(phase.interactive and phase.interactive.failed for phase in result.phases):
        sys.exit(1)
