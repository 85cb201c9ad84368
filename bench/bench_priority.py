"""People's requests while a batch fills the same local endpoint: interactive TTFT and E2E (p50, p99) idle,
under a batch sent without priority, and under the batch as sandserve sends it (low priority, making room),
with the batch's tokens/s alone and in each, side by side in one run.

    .venv/bin/python bench/bench_priority.py                       # the local default, SmolLM2-135M (minutes)
    .venv/bin/python bench/bench_priority.py --model tiny          # the random-weight model (quicker)
    .venv/bin/python bench/bench_priority.py --rate 1 --requests 40

A fresh local server in a temporary state directory, taken down at the end: the adapter sends people's
requests to its llama-server and low-priority ones to the batch's own (engines/batch_server.py, under
SCHED_IDLE). Interactive requests: short chat questions at --rate per second (Poisson arrivals, the same
times in every phase), --output-len tokens each; the batch: longer prompts (--batch-words words),
--batch-output tokens each, as many in flight as the batch runner chooses. Prints figures; asserts
nothing. Its last line reads ``priority: interactive TTFT p99 <X>x idle, batch <Y>x alone`` (X with
priority; Y its tokens/s ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile

from rich.console import Console


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="a preset or .gguf (default: the local default)")
    parser.add_argument("--rate", type=float, default=0.25, help="interactive requests per second")
    parser.add_argument("--requests", type=int, default=16, help="interactive requests per phase")
    parser.add_argument("--input-words", type=int, default=8, help="interactive prompt words")
    parser.add_argument("--output-len", type=int, default=8, help="interactive output tokens")
    parser.add_argument("--batch-words", type=int, default=48, help="batch prompt words")
    parser.add_argument("--batch-output", type=int, default=16, help="batch output tokens")
    parser.add_argument("--batch-concurrency", type=int, default=None, help="fix the batch's in-flight count")
    args = parser.parse_args()
    os.environ["SANDSERVE_STATE_DIR"] = tempfile.mkdtemp(prefix="bench-priority-")

    from sandserve.cli.observe_background import BACKGROUND_COLUMNS, background_cells
    from sandserve.cli.tables import render_table
    from sandserve.observe.background import BackgroundBench, BackgroundPlan, batch_from_prompts
    from sandserve.observe.datasets import random_prompts
    from sandserve.serve import lifecycle
    from sandserve.serve.ledger import Registry
    from sandserve.serve.resolve import resolve_spec

    console = Console(width=120)
    plan = BackgroundPlan(rate=args.rate, requests=args.requests, batch_concurrency=args.batch_concurrency)
    interactive = random_prompts(args.input_words, args.output_len, seed=1)
    batch = batch_from_prompts(random_prompts(args.batch_words, args.batch_output, seed=2))
    os.environ.setdefault("COLUMNS", "120")
    endpoint = lifecycle.up(resolve_spec(args.model, provider="local"))
    try:
        cores = os.cpu_count()
        console.print(
            f"{endpoint.model} on {cores} cores, {endpoint.info.get('max_running_requests')} slots; "
            f"{args.requests} interactive requests per phase at {args.rate}/s; batch prompts of "
            f"{args.batch_words} words, {args.batch_output} output tokens"
        )
        bench = BackgroundBench(
            endpoint, interactive, batch, f"random ({args.batch_words} words)", plan, public_endpoint={}
        )
        result = asyncio.run(bench.run(lambda phase: console.print(f"  {phase.name}: {phase.wall_s:.0f} s")))
    finally:
        registry = Registry()
        lifecycle.down(registry.get(endpoint.id), registry)
    console.print(
        render_table(BACKGROUND_COLUMNS, background_cells(result), width=console.width), soft_wrap=False
    )
    console.print(result.headline())


if __name__ == "__main__":
    main()
