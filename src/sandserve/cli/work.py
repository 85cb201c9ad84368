"""Batch verbs: batch (an OpenAI batch file) and classify (the guide's workload)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from sandserve.cli._app import main, reports_errors

# --- batch work ---------------------------------------------------------------------------------------


@main.command()
@click.argument("input_path", metavar="IN.jsonl", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT.jsonl", type=click.Path(path_type=Path))
@click.option(
    "--endpoint", "endpoint_id", metavar="ID", help="Endpoint to use (default: the one that is up)."
)
@click.option(
    "--concurrency", type=click.IntRange(min=1), help="Requests in flight (default: from the server)."
)
@click.option(
    "--order",
    type=click.Choice(["input", "prefix"]),
    default="input",
    show_default=True,
    help="prefix: send one request of each shared-prefix group first, so the prefix is computed once.",
)
@click.option("--max-retries", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--retry-errors", is_flag=True, help="Send again the requests that ended in an error line.")
@reports_errors
def batch(
    input_path: Path,
    output_path: Path,
    endpoint_id: str | None,
    concurrency: int | None,
    order: str,
    max_retries: int,
    retry_errors: bool,
) -> None:
    """Run an OpenAI batch file (JSONL) against the endpoint; OUT is resumable.

    Each finished request is appended to OUT as one whole line; run the same command again after a crash or
    Ctrl-C and only the unfinished requests are sent. A summary is written to OUT.summary.json.
    """
    from sandserve.batch.runner import run_batch_sync, summary_path
    from sandserve.cli.console import BatchProgressView, out
    from sandserve.client.connect import connect

    endpoint = connect(endpoint_id)
    with BatchProgressView() as view:
        summary = run_batch_sync(
            endpoint,
            input_path,
            output_path,
            concurrency=concurrency,
            order=order,  # type: ignore[arg-type]  # click.Choice allows only the Order values
            max_retries=max_retries,
            retry_errors=retry_errors,
            on_progress=view.update,
        )
    out.print(_batch_summary_table(summary))
    out.print(f"results: {output_path}   summary: {summary_path(output_path)}")
    if summary.failed:
        sys.exit(1)


def _batch_summary_table(summary: Any) -> Any:
    from rich.table import Table

    table = Table(
        "requests",
        "ok",
        "failed",
        "skipped",
        "req/s",
        "in tok/s",
        "out tok/s",
        "cached",
        "p50 / p90 / p99 s",
        "errors",
        title="batch summary",
    )
    latency = " / ".join(
        f"{value:.2f}" if value is not None else "-"
        for value in (summary.latency_p50_s, summary.latency_p90_s, summary.latency_p99_s)
    )
    errors = ", ".join(f"{kind} {count}" for kind, count in summary.errors_by_kind.items()) or "-"
    table.add_row(
        str(summary.requests),
        str(summary.succeeded),
        str(summary.failed),
        str(summary.skipped),
        f"{summary.requests_per_s:,.1f}",
        f"{summary.input_tokens_per_s:,.0f}",
        f"{summary.output_tokens_per_s:,.0f}",
        f"{100 * summary.cached_share:.1f}%",
        latency,
        errors,
    )
    return table


@main.command()
@click.option(
    "--endpoint", "endpoint_id", metavar="ID", help="Endpoint to use (default: the one that is up)."
)
@click.option("--books", metavar="A,B,...", help="Authors or Gutenberg ids (default: all thirteen).")
@click.option("--per-book", type=click.IntRange(min=1), help="Passages per book (default 21: 273 in all).")
@click.option(
    "--corpus-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with local copies (pg<ID>.txt); missing books are downloaded and cached.",
)
@click.option("--temperature", type=float, help="Sampling temperature (default: the server's).")
@click.option("--order", type=click.Choice(["input", "prefix"]), default="input", show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests in flight (default: all at once).")
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    help="Where the report goes (default: runs/classify-<time>).",
)
@reports_errors
def classify(
    endpoint_id: str | None,
    books: str | None,
    per_book: int | None,
    corpus_dir: Path | None,
    temperature: float | None,
    order: str,
    concurrency: int | None,
    run_dir: Path | None,
) -> None:
    """The guide's workload: 273 passages of 13 books, classified by author, then indoors or outdoors."""
    import asyncio

    from sandserve.cli.console import BatchProgressView, DownloadProgressView, err, out
    from sandserve.client.connect import connect
    from sandserve.workloads import classify as workload
    from sandserve.workloads.corpus import PASSAGES_PER_BOOK, load_passages, select_books
    from sandserve.workloads.report import write_report

    chosen = select_books(books.split(",") if books else None)
    run_dir = run_dir or Path("runs") / time.strftime("classify-%Y%m%d-%H%M%S")
    if run_dir.exists():
        raise click.UsageError(f"{run_dir} already exists: pass another --run-dir.")
    endpoint = connect(endpoint_id)
    err.print(f"loading {len(chosen)} books (downloaded from Project Gutenberg once, then cached) ...")
    with DownloadProgressView() as downloads:
        passages = load_passages(
            chosen, per_book or PASSAGES_PER_BOOK, corpus_dir=corpus_dir, on_progress=downloads.update
        )
    err.print(f"classifying {len(passages)} passages, two questions each, on {endpoint.model} ...")
    with BatchProgressView("pass 1 - author") as view:
        report = asyncio.run(
            workload.classify(
                endpoint,
                passages,
                temperature=temperature,
                order=order,
                concurrency=concurrency,
                on_progress=lambda name, progress: view.update(
                    progress, f"pass {1 if name == 'author' else 2} - {name}"
                ),
            )
        )
    if endpoint.serves_random_model:
        from sandserve.engines.tinymodel import DISCLAIMER

        err.print(f"[yellow]note: the tiny model has {DISCLAIMER}[/]")
    for line in workload.summary_lines(report):
        out.print(line)
    paths = write_report(run_dir, report)
    out.print("report: " + "  ".join(str(path) for path in paths))
