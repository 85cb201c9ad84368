"""The benchmark client's own ceiling: `sandserve bench`'s streaming aiohttp client against the guide's client
(openai.AsyncOpenAI), the same streamed requests on the same instant server, side by side in one run.

The server (sandserve.observe.scripted --instant-tokens N) is a canned-answer HTTP/1.1 keep-alive server in a
process of its own; every request streams N token chunks, a usage chunk and [DONE]. Reported per client:
requests/s, CPU ms per request (this process's CPU time / requests), and the client's CPU share (1.0 = one
core saturated). CPU ms per request is the figure that survives a busy machine; requests/s is what this
machine gave at the time. Prints figures, asserts nothing.

    .venv/bin/python bench/bench_client_ceiling.py --requests 5000 --openai-requests 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.table import Table

from sandserve.observe.ceiling import measure_client_ceiling


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000, help="sandserve client requests per run")
    parser.add_argument("--openai-requests", type=int, default=1000, help="AsyncOpenAI requests per run")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=4, help="streamed token chunks per answer")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    console = Console(width=160)
    table = Table("run", "client", "requests", "in flight", "req/s", "CPU ms/request", "client CPU", "failed")
    ratios, cpu_ratios, ceilings = [], [], []
    for run in range(1, args.repeat + 1):
        result = measure_client_ceiling(
            requests=args.requests,
            openai_requests=args.openai_requests,
            concurrency=args.concurrency,
            output_tokens=args.tokens,
        )
        for row in result.rows:
            table.add_row(
                str(run),
                row.client,
                str(row.requests),
                str(row.concurrency),
                f"{row.requests_per_s:,.0f}",
                f"{row.cpu_ms_per_request:.3f}",
                f"{row.client_cpu:.0%}",
                str(row.failed),
            )
        ours, sdk = result.rows
        ratios.append(result.speedup or 0.0)
        cpu_ratios.append(sdk.cpu_ms_per_request / ours.cpu_ms_per_request)
        ceilings.append(1000 / ours.cpu_ms_per_request)
    console.print(table)
    console.print(
        f"cores on this machine: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.2f}\n"
        f"requests/s ratio (sandserve / AsyncOpenAI), per run: {', '.join(f'{r:.1f}x' for r in ratios)}\n"
        "CPU per request ratio (AsyncOpenAI / sandserve), per run: "
        f"{', '.join(f'{r:.1f}x' for r in cpu_ratios)}\n"
        "sandserve client's CPU-bound ceiling, per run: "
        f"{', '.join(f'{c:,.0f}' for c in ceilings)} requests/s per core"
    )


if __name__ == "__main__":
    main()
