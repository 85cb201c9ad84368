"""Routing: the same traffic through fresh fleets under each policy and each gateway (sglang-router, smg).

    .venv/bin/python bench/bench_routing.py        # 8 documents x 4 questions, 4 in flight, 3 repeats
    .venv/bin/python bench/bench_routing.py --gateways smg --policies cache_aware,round_robin --repeats 1

Each document (about 500 words) is asked several questions, document first, so the document is the prefix a
worker can reuse from its cache; requests are shuffled with a fixed seed. Every run gets a fresh fleet (cold
caches) of 2 local llama-server workers (the default local model) behind the real gateway. Prints, per
gateway and policy: failed requests, cached share (cached prompt tokens / prompt tokens) and its ratio to the
ideal for the traffic (from the workers' own tokenizer: the first question per document cannot reuse its
document), time to first token and end-to-end latency (median and p95, streamed), wall time. Runs are
interleaved so a slow spell of the machine hits every configuration alike. Asserts nothing; uses a temporary
state directory.
The library does the work (sandserve.fleet.routing_bench, also `sandserve fleet bench`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", default="cache_aware,round_robin,random")
    parser.add_argument("--gateways", default="sglang-router,smg")
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--words", type=int, default=500, help="words per document")
    parser.add_argument("--questions", type=int, default=4, help="questions per document")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="fresh fleets per configuration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as scratch:
        os.environ["SANDSERVE_STATE_DIR"] = str(Path(scratch) / "state")
        from sandserve.fleet.routing_bench import compare_policies, make_traffic, median, percentile
        from sandserve.serve.resolve import resolve_spec

        traffic = make_traffic(args.documents, args.words, args.questions, args.seed)
        runs, ideal = compare_policies(
            resolve_spec(provider="local"),
            args.policies.split(","),
            traffic,
            repeats=args.repeats,
            gateways=args.gateways.split(","),
            in_flight=args.in_flight,
            max_tokens=args.max_tokens,
        )

    console = Console(width=140)
    table = Table(
        title=f"{traffic.description}, {args.in_flight} in flight, 2 local workers, "
        f"{args.repeats} fresh fleet(s) per row; ideal cached share {ideal:.3f}"
        if ideal
        else traffic.description
    )
    for column in ("gateway", "policy", "failed", "cached (mean)", "per run", "/ideal", "TTFT p50",
                   "TTFT p95", "e2e p50", "e2e p95", "wall s"):  # fmt: skip
        table.add_column(column, justify="right")
    summary: dict[tuple[str, str], tuple[float, float]] = {}
    for gateway in args.gateways.split(","):
        for policy in args.policies.split(","):
            group = [run for run in runs if run.gateway == gateway and run.policy == policy]
            ttft = [value for run in group for value in run.ttft_s]
            e2e = [value for run in group for value in run.e2e_s]
            share = statistics.mean(run.cached_share for run in group)
            summary[gateway, policy] = (share, median(e2e) or 0.0)
            table.add_row(
                gateway,
                policy,
                f"{sum(run.failed for run in group)}/{sum(run.requests for run in group)}",
                f"{share:.3f}",
                " ".join(f"{run.cached_share:.3f}" for run in group),
                f"{share / ideal:.2f}" if ideal else "-",
                *(
                    f"{value:.3f}" if value is not None else "-"
                    for value in (median(ttft), percentile(ttft, 0.95), median(e2e), percentile(e2e, 0.95))
                ),
                f"{statistics.mean(run.wall_s for run in group):.2f}",
            )
    console.print(table)
    gateways = args.gateways.split(",")
    if len(gateways) == 2:
        first, second = gateways
        for policy in args.policies.split(","):
            (share_a, e2e_a), (share_b, e2e_b) = summary[first, policy], summary[second, policy]
            console.print(
                f"{policy}: {second} / {first}: cached share x{share_b / share_a:.2f}, "
                f"median end-to-end x{e2e_b / e2e_a:.2f}"
                if share_a and e2e_a
                else f"{policy}: nothing cached through {first}"
            )


if __name__ == "__main__":
    main()
