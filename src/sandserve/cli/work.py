"""Batch verbs: batch (an OpenAI batch file) and classify (the guide's workload)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from sandserve.cli._app import exit_interrupted, main, reports_errors
from sandserve.cli.choosing import endpoint_option
from sandserve.cli.values import TEMPERATURE, Seconds

# --- batch work ---------------------------------------------------------------------------------------

#: Batch work goes behind people's requests unless told otherwise (the engines' priority scheduling).
batch_priority = click.option(
    "--priority",
    type=click.Choice(["low", "normal", "high"]),
    default="low",
    show_default=True,
    help="Batch work goes behind people's requests to the same endpoint; normal competes with them.",
)


@main.command()
@click.argument("input_path", metavar="IN.jsonl", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT.jsonl", type=click.Path(path_type=Path))
@endpoint_option("endpoint_id")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Requests in flight, fixed (default: from the server, lowered while people's requests wait).",
)
@click.option(
    "--order",
    type=click.Choice(["input", "prefix"]),
    default="input",
    show_default=True,
    help="prefix: send one request of each shared-prefix group first, so the prefix is computed once.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0, max=100),
    default=5,
    show_default=True,
    help="Retries of a request after a timeout, a dropped connection, 408/429 or 5xx.",
)
@click.option(
    "--timeout",
    "request_timeout",
    type=Seconds(maximum=86_400),
    default=600.0,
    show_default=True,
    help="Seconds one attempt of one request may take before it is retried.",
)
@click.option("--retry-errors", is_flag=True, help="Send again the requests in OUT.errors.jsonl.")
@batch_priority
@reports_errors
def batch(
    input_path: Path,
    output_path: Path,
    endpoint_id: str | None,
    concurrency: int | None,
    order: str,
    max_retries: int,
    request_timeout: float,
    retry_errors: bool,
    priority: str,
) -> None:
    """Run an OpenAI batch file (JSONL) against the endpoint; OUT is resumable.

    Each answered request is appended to OUT as one whole line; an error the server gave for the request
    itself (a 4xx) goes to OUT.errors.jsonl, as in the OpenAI Batch API. A request with no answer (the
    endpoint went away, timeouts, 5xx after every retry) gets no line: the run stops, exits 3 and says how
    many are left, and the same command again (with --endpoint for another endpoint) sends them. A summary
    is written to OUT.summary.json.
    """
    from sandserve.batch import errors_path, run_batch_sync, summary_path
    from sandserve.batch.files import check_paths
    from sandserve.cli.batch_view import show_batch_summary, tell_batch_interrupted
    from sandserve.cli.console import BatchProgressView, err, out
    from sandserve.client.connect import connect
    from sandserve.errors import BatchIncompleteError

    check_paths(input_path, output_path)  # before any endpoint is looked up
    endpoint = connect(endpoint_id)
    try:
        with BatchProgressView() as view:
            summary = run_batch_sync(
                endpoint,
                input_path,
                output_path,
                concurrency=concurrency,
                order=order,  # type: ignore[arg-type]  # click.Choice allows only the Order values
                max_retries=max_retries,
                retry_errors=retry_errors,
                request_timeout_s=request_timeout,
                on_progress=view.update,
                priority=priority,  # type: ignore[arg-type]  # click.Choice allows only the Priority values
            )
    except BatchIncompleteError as error:
        if error.summary is not None:
            show_batch_summary(error.summary, output_path)
        err.print(f"results so far: {output_path}   summary: {summary_path(output_path)}")
        raise
    except KeyboardInterrupt:
        tell_batch_interrupted(output_path)
        exit_interrupted()
    show_batch_summary(summary, output_path)
    errors = errors_path(output_path)
    failed = _count_lines(errors)
    shown_errors = f"   errors: {errors}" if errors.exists() else ""
    out.print(f"results: {output_path}{shown_errors}   summary: {summary_path(output_path)}")
    if failed:  # this run's and earlier runs': the exit code tells the state of the whole batch
        err.print(
            f"{failed} requests ended in an error the server gave for them (or are not valid requests): "
            f"see {errors}; --retry-errors sends them again"
        )
        sys.exit(1)


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for _ in file)
    except FileNotFoundError:
        return 0


@main.command()
@endpoint_option("endpoint_id")
@click.option("--books", metavar="A,B,...", help="Authors or Gutenberg ids (default: all thirteen).")
@click.option("--per-book", type=click.IntRange(min=1), help="Passages per book (default 21: 273 in all).")
@click.option(
    "--corpus-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with local copies (pg<ID>.txt); missing books are downloaded and cached.",
)
@click.option("--temperature", type=TEMPERATURE, help="Sampling temperature, 0-2 (default: the server's).")
@click.option("--order", type=click.Choice(["input", "prefix"]), default="input", show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Requests in flight (default: from the server's capacity: all at once on SGLang on a GPU, as the "
    "guide sends them; a few at a time on a CPU, where a long queue would outlast the request timeout).",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    help="Where the report goes (default: runs/classify-<time>).",
)
@batch_priority
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
    priority: str,
) -> None:
    """The guide's workload: 273 passages of 13 books, classified by author, then indoors or outdoors."""
    import asyncio

    from sandserve.cli.batch_view import answered_so_far, tell_classify_stopped, with_kept
    from sandserve.cli.console import BatchProgressView, DownloadProgressView, err, out
    from sandserve.client.connect import connect
    from sandserve.errors import BatchIncompleteError
    from sandserve.workloads import classify as workload
    from sandserve.workloads.answers import answers_dir_for, kept_answers
    from sandserve.workloads.corpus import PASSAGES_PER_BOOK, check_corpus_dir, load_passages, select_books
    from sandserve.workloads.report import write_report

    if corpus_dir is not None:
        check_corpus_dir(corpus_dir)
    chosen = select_books(books.split(",") if books else None)
    run_dir = run_dir or Path("runs") / time.strftime("classify-%Y%m%d-%H%M%S")
    if run_dir.exists():
        raise click.UsageError(f"{run_dir} already exists: pass another --run-dir.")
    kept = answers_dir_for(run_dir)
    endpoint = connect(endpoint_id)
    err.print(f"loading {len(chosen)} books (downloaded from Project Gutenberg once, then cached) ...")
    with DownloadProgressView() as downloads:
        passages = load_passages(
            chosen, per_book or PASSAGES_PER_BOOK, corpus_dir=corpus_dir, on_progress=downloads.update
        )
    already = {name: len(kept_answers(kept, name)) for name in ("author", "setting")}
    if kept.exists():
        err.print(f"going on from the answers kept in {kept} ({answered_so_far(kept)})")
    err.print(f"classifying {len(passages)} passages, two questions each, on {endpoint.model} ...")
    try:
        with BatchProgressView("pass 1 - author") as view:
            report = asyncio.run(
                workload.classify(
                    endpoint,
                    passages,
                    temperature=temperature,
                    order=order,
                    concurrency=concurrency,
                    on_progress=lambda name, progress: view.update(
                        with_kept(progress, already.get(name, 0)),
                        f"pass {1 if name == 'author' else 2} - {name}",
                    ),
                    answers_dir=kept,
                    priority=priority,  # type: ignore[arg-type]  # click.Choice allows only the Priority values
                )
            )
    except KeyboardInterrupt:
        tell_classify_stopped(kept, run_dir, interrupted=True)
        exit_interrupted()
    except BatchIncompleteError as error:
        again = tell_classify_stopped(kept, run_dir, interrupted=False)
        error.hint = (
            f"Nothing was lost: `{again}` goes on from the answers kept (with --endpoint ID for another)."
        )
        raise
    if endpoint.serves_random_model:
        from sandserve.engines.tinymodel import DISCLAIMER

        err.print(f"[yellow]note: the tiny model has {DISCLAIMER}[/]")
    for line in workload.summary_lines(report):
        out.print(line)
    paths = write_report(run_dir, report)
    kept.replace(run_dir / "answers")  # the raw answers go with the report they made
    out.print("report: " + "  ".join(str(path) for path in paths))
