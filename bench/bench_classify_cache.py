"""The guide's two-pass classification on the local default (SmolLM2-135M-Instruct): pass 1 and pass 2 wall
time, the speed-up and the cached share, side by side in one run.

    .venv/bin/python bench/bench_classify_cache.py --per-book 2          # 26 synthetic passages (minutes)
    .venv/bin/python bench/bench_classify_cache.py --orders input,prefix # the guide's order and prefix order
    .venv/bin/python bench/bench_classify_cache.py --model tiny          # the random-weight model (seconds)
    .venv/bin/python bench/bench_classify_cache.py --corpus-dir DIR --per-book 21   # the real corpus

Each order gets a freshly started server (a cold cache), so runs are measured alike. Without --corpus-dir the
books are generated (no network here): about 3,000-token passages of common words, so the figures are about
caching, not accuracy. Prints figures; asserts nothing; uses a temporary state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table


def run_order(order: str, passages: list, concurrency: int | None, model: str | None) -> object:
    from sandserve.serve import lifecycle
    from sandserve.serve.ledger import Registry
    from sandserve.serve.resolve import resolve_spec
    from sandserve.workloads.classify import classify

    endpoint = lifecycle.up(resolve_spec(model, provider="local"))
    try:
        return asyncio.run(classify(endpoint, passages, temperature=0, order=order, concurrency=concurrency))
    finally:
        registry = Registry()
        lifecycle.down(registry.get(endpoint.id), registry)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-dir", type=Path, help="folder with pg<ID>.txt files (default: generated)")
    parser.add_argument("--per-book", type=int, default=2)
    parser.add_argument("--concurrency", type=int, help="requests in flight (default: all at once)")
    parser.add_argument("--orders", default="input", help="comma-separated: input (the guide's), prefix")
    parser.add_argument("--model", help="a local preset or GGUF file (default: the local default)")
    args = parser.parse_args()
    orders = [order.strip() for order in args.orders.split(",") if order.strip()]

    from sandserve.workloads.corpus import BOOKS, load_passages, write_synthetic_corpus

    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as scratch:
        os.environ["SANDSERVE_STATE_DIR"] = str(Path(scratch) / "state")
        corpus_dir = args.corpus_dir or write_synthetic_corpus(Path(scratch))
        passages = load_passages(dict(BOOKS), args.per_book, corpus_dir=corpus_dir)
        reports = {order: run_order(order, passages, args.concurrency, args.model) for order in orders}

    model = args.model or "the local default (SmolLM2-135M-Instruct)"
    table = Table(title=f"two passes over {len(passages)} passages on {model}, {os.cpu_count()} CPUs")
    for column in ("order", "pass", "wall s", "input tok", "cached tok", "cached share", "input tok/s"):
        table.add_column(column, justify="right")
    for order, report in reports.items():
        for name, run in (("1 author", report.author_pass), ("2 setting", report.setting_pass)):
            table.add_row(
                order,
                name,
                f"{run.wall_s:.2f}",
                f"{run.input_tokens:,}",
                f"{run.cached_tokens:,}",
                f"{100 * run.cached_share:.1f}%",
                f"{run.input_tokens_per_s:,.0f}",
            )
    console = Console()
    console.print(table)
    for order, report in reports.items():
        first, second = report.author_pass, report.setting_pass
        console.print(
            f"{order} order: pass 1 {first.wall_s:.1f} s, pass 2 {second.wall_s:.1f} s, "
            f"speed-up {report.speedup:.1f}x (the guide's H100: 4.7x), "
            f"pass 2 cached share {100 * second.cached_share:.1f}%, "
            f"failed {first.failed + second.failed}, answered {first.answered + second.answered}"
        )


if __name__ == "__main__":
    main()
