"""Observe verbs: `top` (what endpoints are doing now) and `bench` (how fast one is for your traffic)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from sandserve.cli._app import INTERRUPTED, exit_interrupted, main, reports_errors
from sandserve.cli.choosing import chosen_endpoint, endpoint_option
from sandserve.cli.program import runnable
from sandserve.cli.values import SLO

# --- top --------------------------------------------------------------------------------------------------


@main.command()
@click.argument("ref", metavar="[ID|FLEET]", required=False)
@endpoint_option("endpoint_option", default="top")
@click.option(
    "--once", is_flag=True, help="Print one reading (two probes a second apart, for rates) and exit."
)
@click.option("--json", "as_json", is_flag=True, help="Print the reading as JSON (implies --once).")
@click.option(
    "--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True, help="Seconds per refresh."
)
@reports_errors
def top(ref: str | None, endpoint_option: str | None, once: bool, as_json: bool, interval: float) -> None:
    """What each endpoint (or each worker of a fleet) is doing now, from the servers' own load reports.

    Running and queued requests, KV/token usage, cache hit rate, tokens/s and requests/s, failed readings and
    age; for a fleet, its autoscaler's last decision and its gateway's view of each worker (health, load).
    The list is read again at every refresh: workers that join or leave appear or vanish. Columns that do
    not fit the terminal are left out (the caption names them; --json has everything). Sources: SGLang's
    /v1/loads and /metrics, llama.cpp's /slots and /metrics, the gateway's /workers. Probes do not count as
    activity for Daytona's auto-stop. q or Ctrl-C to leave.
    """
    import asyncio

    from sandserve.cli.top_view import print_once, watch
    from sandserve.observe.top import TopModel, snapshot_once, targets_for

    ref = chosen_endpoint(ref, endpoint_option)
    targets_for(ref)  # a wrong id or nothing up: said now, before any screen is drawn
    if once or as_json:
        snapshot = asyncio.run(snapshot_once(lambda: targets_for(ref), interval=min(interval, 1.0)))
        if as_json:
            click.echo(json.dumps(snapshot.to_dict(), indent=1))
        else:
            print_once(snapshot)
        return

    async def run() -> None:
        async with TopModel(lambda: targets_for(ref)) as model:
            await watch(model, interval)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return


# --- bench ------------------------------------------------------------------------------------------------


def _numbers(text: str | None, what: str) -> tuple[float, ...]:
    if not text:
        return ()
    values = []
    for part in text.split(","):
        part = part.strip().lower()
        try:
            values.append(math.inf if part in ("inf", "max") else float(part))
        except ValueError:
            raise click.BadParameter(
                f"{part!r} is not a number (write e.g. 1,4,16)", param_hint=what
            ) from None
    return tuple(values)


def _source(dataset: str, options: dict[str, Any], endpoint: Any) -> Any:
    from sandserve.observe import datasets

    if dataset == "random":
        return datasets.random_prompts(
            options["input_len"],
            options["output_len"],
            range_ratio=options["range_ratio"],
            seed=options["seed"],
        )
    if dataset == "shared-prefix":
        return datasets.shared_prefix_prompts(
            options["groups"],
            options["prompts_per_group"],
            options["system_len"],
            options["question_len"],
            options["output_len"],
            seed=options["seed"],
        )
    if dataset == "jsonl":
        if not options["prompts"]:
            raise click.UsageError("--dataset jsonl needs --prompts FILE.jsonl")
        return datasets.jsonl_prompts(options["prompts"], output_len=options["output_len"])
    from sandserve.workloads.classify import AUTHOR, answer_request
    from sandserve.workloads.corpus import load_passages, select_books

    prompts = []
    books = select_books(options["books"].split(",") if options["books"] else None)
    for passage in load_passages(books, corpus_dir=options["corpus_dir"]):
        body = dict(answer_request(endpoint, passage, AUTHOR).body)
        messages, max_tokens = body.pop("messages"), body.pop("max_tokens")
        body.pop("model", None)
        prompts.append(datasets.BenchPrompt(messages, min(max_tokens, options["output_len"]), body))
    return datasets.given_prompts("classification corpus (the guide's author question)", prompts)


def _print_ceiling(requests: int | None) -> None:
    from sandserve.cli.console import err, out
    from sandserve.cli.tables import Cell, Column, show_table
    from sandserve.observe.ceiling import measure_client_ceiling

    err.print("[bold cyan]::[/] measuring the client against an instant local server (about 20 s)")
    result = (
        measure_client_ceiling()
        if requests is None
        else measure_client_ceiling(requests=requests, openai_requests=max(requests // 5, 1))
    )
    columns = (
        Column("client", keep=True),
        Column("requests", number=True),
        Column("in flight", number=True),
        Column("req/s", number=True),
        Column("CPU ms/request", number=True, digits=3),
        Column("client CPU", number=True),
        Column("failed", number=True),
    )
    rows: list[list[Cell]] = [
        [
            row.client,
            row.requests,
            row.concurrency,
            row.requests_per_s,
            row.cpu_ms_per_request,
            f"{row.client_cpu:.0%}",
            row.failed,
        ]
        for row in result.rows
    ]
    show_table(columns, rows)
    ours = result.rows[0]
    out.print(
        f"CPU-bound ceiling of the sandserve client: {1000 / ours.cpu_ms_per_request:,.0f} requests/s per "
        f"core ({result.output_tokens} streamed tokens each; this machine has {result.cores} cores)."
    )
    if result.speedup is not None:
        cpu_ratio = result.rows[1].cpu_ms_per_request / ours.cpu_ms_per_request
        out.print(
            f"vs the OpenAI SDK: {result.speedup:.1f}x the requests/s, {cpu_ratio:.1f}x less CPU per request."
        )
    if ours.client_cpu < 0.9:
        out.print(
            "[dim]The client was not CPU-saturated (the server or other load on this machine set the pace); "
            "CPU ms/request is the figure that carries over.[/]"
        )


@main.command()
@click.argument("endpoint_id", metavar="[ID]", required=False)
@endpoint_option()
@click.option("--concurrency", "concurrency_text", metavar="N,N,..", help="Concurrency levels (closed loop).")
@click.option(
    "--rate", "rate_text", metavar="R,R,..", help="Request rates per second (Poisson; inf: all at once)."
)
@click.option("--sweep", is_flag=True, help="Concurrency 1,2,4,... until output tokens/s stop growing.")
@click.option(
    "--max-concurrency", type=click.IntRange(min=1), help="With --rate: at most this many in flight."
)
@click.option(
    "--requests", type=click.IntRange(min=1), help="Requests per level (default: 4 x concurrency, >= 16)."
)
@click.option(
    "--dataset",
    type=click.Choice(["random", "shared-prefix", "jsonl", "classify"]),
    default="random",
    show_default=True,
)
@click.option("--input-len", type=int, default=256, show_default=True, help="random: prompt words.")
@click.option("--output-len", type=int, default=128, show_default=True, help="Output tokens per request.")
@click.option(
    "--range-ratio", type=float, default=1.0, show_default=True, help="random: lengths in [len*r, len]."
)
@click.option("--groups", type=int, default=4, show_default=True, help="shared-prefix: prefixes.")
@click.option("--prompts-per-group", type=int, default=8, show_default=True)
@click.option("--system-len", type=int, default=512, show_default=True, help="shared-prefix: prefix words.")
@click.option("--question-len", type=int, default=32, show_default=True)
@click.option("--prompts", type=click.Path(path_type=Path), help="jsonl: the prompt file.")
@click.option(
    "--corpus-dir",
    type=click.Path(path_type=Path),
    help="classify: a folder with the pg<ID>.txt books (else cached).",
)
@click.option("--books", metavar="A,B", help="classify: only these books (author or Gutenberg id).")
@click.option(
    "--slo", type=SLO, metavar="ttft=MS,tpot=MS,e2e=MS", help="Objectives for goodput (milliseconds)."
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Unrecorded requests first."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--api",
    type=click.Choice(["chat", "responses", "messages"]),
    default="chat",
    show_default=True,
    help="Which API the requests use: chat completions, Responses or Anthropic Messages.",
)
@click.option(
    "--output",
    "output_dir",
    type=click.Path(path_type=Path),
    default=Path("bench-results"),
    show_default=True,
)
@click.option(
    "--client-ceiling", is_flag=True, help="Measure this client against an instant local server instead."
)
@click.option(
    "--background",
    metavar="FILE|random",
    help="Interactive requests at --rate while a batch (an OpenAI batch file, or random prompts) runs: idle, "
    "under a batch without priority, under one with it.",
)
@reports_errors
def bench(endpoint_id: str | None, endpoint_option: str | None, **options: Any) -> None:
    """A serving benchmark of the endpoint: TTFT, TPOT, ITL, E2E (mean, p50, p90, p99), throughput, goodput,
    with the server's own queue depth, KV usage and cache hit rate joined to each load level.

    Writes OUTPUT/bench.json, OUTPUT/report.md and plots; Ctrl-C stops and still writes what was measured.
    """
    if options["client_ceiling"]:
        _print_ceiling(options["requests"])
        return
    if options["background"]:
        from sandserve.cli.observe_background import run_background

        options["rate_values"] = _numbers(options["rate_text"], "--rate")
        source = None if options["dataset"] == "classify" else _source(options["dataset"], options, None)
        if source is None:
            raise click.UsageError("--background takes the random, shared-prefix or jsonl dataset.")
        run_background(endpoint_id, options, source)
        return
    from sandserve.cli.bench_view import LevelProgressView, interrupted_lines, show_levels
    from sandserve.cli.console import err, out
    from sandserve.cli.resume import this_command_args
    from sandserve.client.connect import connect
    from sandserve.observe.bench import BenchConfig, BenchInterrupted, LoadPlan, run_bench_sync
    from sandserve.observe.metrics import parse_slo
    from sandserve.observe.report import write_report

    modes = [m for m in ("concurrency_text", "rate_text") if options[m]] + (
        ["sweep"] if options["sweep"] else []
    )
    if len(modes) > 1:
        raise click.UsageError("Give one of --concurrency, --rate or --sweep.")
    if options["rate_text"]:
        plan = LoadPlan(
            "rate",
            _numbers(options["rate_text"], "--rate"),
            options["requests"],
            options["max_concurrency"],
        )
    elif options["sweep"]:
        plan = LoadPlan("sweep", (), options["requests"])
    else:
        plan = LoadPlan(
            "concurrency",
            _numbers(options["concurrency_text"] or "1,4,16", "--concurrency"),
            options["requests"],
        )
    config = BenchConfig(
        plan,
        slo=parse_slo(options["slo"]),
        warmup=options["warmup"],
        seed=options["seed"],
        api=options["api"],
    )
    from sandserve.observe.top import load_endpoints_for

    # Every argument is checked before the endpoint is asked anything (the corpus prompts need the endpoint).
    source = None if options["dataset"] == "classify" else _source(options["dataset"], options, None)
    endpoint_id = chosen_endpoint(endpoint_id, endpoint_option)
    endpoint = connect(endpoint_id)
    load_endpoints = load_endpoints_for(endpoint_id)
    source = source or _source(options["dataset"], options, endpoint)
    api = "" if options["api"] == "chat" else f", {options['api']} API"
    err.print(f"[bold cyan]::[/] benchmarking {endpoint.model} at {endpoint.url} ({source.describe()}{api})")

    def on_level(level: Any) -> None:
        for warning in level.warnings:
            err.print(f"  [yellow]![/] {level.label}: {warning}")

    interrupted = False
    try:
        with LevelProgressView() as progress:
            run = run_bench_sync(
                endpoint,
                source,
                config,
                on_level,
                load_endpoints=load_endpoints,
                on_progress=progress.update,
            )
        result = run.result
    except BenchInterrupted as stop:
        result, interrupted = stop.run.result, True
        err.print("[yellow]interrupted:[/] writing what was measured")
        planned = stop.run.levels_planned()
    written = write_report(result, options["output_dir"])
    show_levels(result.levels, report_dir=str(options["output_dir"]))
    out.print(f"report: {written['report']}   data: {written['json']}")
    if interrupted:
        for line in interrupted_lines(result, planned, this_command_args(), plan.mode):
            err.print(line, soft_wrap=True)
        sys.stdout.flush()
        exit_interrupted()
    if result.server_gone:
        err.print(f"[red]error:[/] {result.server_gone.describe()}; the benchmark stopped there.")
        which = f" {endpoint_id}" if endpoint_id else ""
        err.print(
            runnable(
                f"  -> `sandserve status{which}` says what became of it; "
                f"`sandserve logs{which}` shows its log."
            )
        )
        sys.exit(1)
    if any(level.metrics and level.metrics.failed for level in result.levels):
        sys.exit(1)


__all__ = ["INTERRUPTED", "bench", "top"]
