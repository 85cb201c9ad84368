"""The guide's structured-output request, many times, on the local default (SmolLM2-135M-Instruct): how many
answers finish (and validate), how many are cut at max_tokens, and whether the server ever fails.

    .venv/bin/python bench/bench_structured.py                         # 50 requests, the preset's sampling
    .venv/bin/python bench/bench_structured.py --requests 20 --compare  # also llama.cpp's default sampling

Requests go through the library (`sandserve.client.chat.ask` with the guide's haiku schema), which validates
every finished answer against the schema and raises AnswerCutShortError for one cut at max_tokens. With
--compare the same server also answers with llama.cpp's own defaults (temperature 0.8, top_p 0.95, no repeat
penalty), request by request, so the two settings are measured side by side. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sandserve.workloads.tour import HAIKU_PROMPT, HAIKU_SCHEMA

LLAMA_CPP_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "repeat_penalty": 1.0}


def run(
    endpoint: object, requests: int, max_tokens: int, sampling: dict[str, float] | None
) -> dict[str, float]:
    from sandserve.client.chat import ChatOptions, ask
    from sandserve.client.constrained import pick_constraint
    from sandserve.errors import AnswerCutShortError, ConstraintViolatedError, ServerFailedError

    options = ChatOptions(
        max_tokens=max_tokens,
        constraint=pick_constraint(json_schema=HAIKU_SCHEMA),
        temperature=(sampling or {}).get("temperature"),
        extra_body={k: v for k, v in (sampling or {}).items() if k != "temperature"} or None,
    )

    def one(_: int) -> tuple[str, float]:
        started = time.perf_counter()
        try:
            ask(endpoint, HAIKU_PROMPT, options)  # type: ignore[arg-type]
            outcome = "valid"
        except AnswerCutShortError:
            outcome = "cut at max_tokens"
        except ConstraintViolatedError:
            outcome = "finished but invalid"
        except ServerFailedError:
            outcome = "server error"
        return outcome, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(requests)))
    counts = Counter(outcome for outcome, _ in results)
    return {
        **{
            k: counts.get(k, 0)
            for k in ("valid", "cut at max_tokens", "finished but invalid", "server error")
        },
        "mean s": sum(seconds for _, seconds in results) / len(results),
        "wall s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--compare", action="store_true", help="also run with llama.cpp's default sampling")
    parser.add_argument("--model", help="a local preset or GGUF file (default: the local default)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as scratch:
        os.environ["SANDSERVE_STATE_DIR"] = str(Path(scratch) / "state")
        from sandserve.serve import lifecycle
        from sandserve.serve.ledger import Registry
        from sandserve.serve.resolve import resolve_spec

        endpoint = lifecycle.up(resolve_spec(args.model, provider="local"))
        try:
            rows = {"preset sampling": run(endpoint, args.requests, args.max_tokens, None)}
            if args.compare:
                rows["llama.cpp defaults"] = run(endpoint, args.requests, args.max_tokens, LLAMA_CPP_DEFAULTS)
        finally:
            registry = Registry()
            lifecycle.down(registry.get(endpoint.id), registry)

    table = Table(
        title=f"the guide's haiku schema x {args.requests}, max_tokens {args.max_tokens}, {endpoint.model}"
    )
    columns = ("valid", "cut at max_tokens", "finished but invalid", "server error", "mean s", "wall s")
    table.add_column("sampling")
    for column in columns:
        table.add_column(column, justify="right")
    for name, figures in rows.items():
        table.add_row(
            name, *(f"{figures[c]:.1f}" if c.endswith(" s") else str(int(figures[c])) for c in columns)
        )
    console = Console()
    console.print(table)
    for name, figures in rows.items():
        finished = figures["valid"] + figures["finished but invalid"]
        console.print(
            f"{name}: finish rate {finished / args.requests:.0%}, "
            f"server errors {int(figures['server error'])}"
        )


if __name__ == "__main__":
    main()
