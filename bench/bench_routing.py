"""The routing self-test: the same traffic through fresh 2-worker fleets under each gateway policy.

    .venv/bin/python bench/bench_routing.py                    # 8 documents x 4 questions, 4 in flight
    .venv/bin/python bench/bench_routing.py --repeats 3 --policies cache_aware,round_robin

Each document (about 500 words) is asked several questions, document first, so the document is the prefix a
worker can reuse from its cache. Requests are shuffled with a fixed seed. Every run gets a fresh fleet (cold
caches) of local llama-server workers (the tiny model) behind the real sglang-router. Prints, per policy: the
cached share (cached prompt tokens / prompt tokens), wall time, and how the prompt tokens were spread over
the workers (from their own /metrics). Asserts nothing; uses a temporary state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

QUESTIONS = (
    "What is this document about?",
    "Which place does it mention first?",
    "Summarise it in one sentence.",
    "What is its tone?",
    "Which word appears most?",
    "How does it end?",
)
VOCABULARY = [
    "the",
    "river",
    "stone",
    "lantern",
    "harbour",
    "winter",
    "copper",
    "meadow",
    "signal",
    "orchard",
    "thunder",
    "velvet",
    "quarry",
    "falcon",
    "ember",
    "glacier",
    "saddle",
    "marble",
    "tide",
    "compass",
    "willow",
    "of",
    "and",
    "a",
    "to",
    "in",
    "ship",
    "light",
    "night",
    "garden",
    "door",
    "sea",
    "house",
    "window",
    "mountain",
    "bridge",
    "letter",
    "market",
    "evening",
    "morning",
    "silver",
    "road",
    "forest",
    "field",
    "cloud",
    "village",
    "story",
    "road",
    "king",
    "baker",
    "miller",
    "sailor",
    "doctor",
    "painter",
    "music",
    "silence",
    "autumn",
    "summer",
    "spring",
]


@dataclass
class Run:
    policy: str
    requests: int
    failed: int
    prompt_tokens: int
    cached_tokens: int
    wall_s: float
    busiest_share: float
    """The busiest worker's share of all prompt tokens the workers saw (0.5 = even, 1.0 = one worker)."""

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def make_documents(count: int, words: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(VOCABULARY) for _ in range(words)) for _ in range(count)]


def make_traffic(documents: list[str], questions: int, seed: int) -> list[str]:
    prompts = [
        f"{document}\n\nQuestion: {QUESTIONS[q % len(QUESTIONS)]}"
        for document in documents
        for q in range(questions)
    ]
    random.Random(seed).shuffle(prompts)
    return prompts


async def send_all(endpoint, prompts: list[str], in_flight: int) -> tuple[int, int, int]:
    client = endpoint.async_openai(max_retries=0, timeout=120)
    gate = asyncio.Semaphore(in_flight)
    failed = prompt_tokens = cached_tokens = 0

    async def one(prompt: str) -> None:
        nonlocal failed, prompt_tokens, cached_tokens
        async with gate:
            try:
                reply = await client.chat.completions.create(
                    model=endpoint.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=8,
                    temperature=0,
                )
            except Exception:
                failed += 1
                return
        stats = endpoint.cache_stats(reply)
        prompt_tokens += stats.prompt_tokens
        cached_tokens += stats.cached_tokens

    await asyncio.gather(*(one(prompt) for prompt in prompts))
    await client.close()
    return failed, prompt_tokens, cached_tokens


def tokens_seen(url: str, api_key: str | None) -> float:
    """Prompt tokens a llama-server worker processed or took from its cache (its /metrics)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    values = dict(line.split() for line in text.splitlines() if line.startswith("llamacpp:prompt_tokens"))
    return float(values["llamacpp:prompt_tokens_total"]) + float(
        values["llamacpp:prompt_tokens_cached_total"]
    )


def run_policy(policy: str, prompts: list[str], in_flight: int) -> Run:
    from sandserve.fleet.core import fleet_down, fleet_up
    from sandserve.serve.ledger import Registry
    from sandserve.serve.resolve import resolve_spec

    fleet = fleet_up(resolve_spec(provider="local"), 2, policy)
    try:
        started = time.perf_counter()
        failed, prompt_tokens, cached_tokens = asyncio.run(send_all(fleet.endpoint, prompts, in_flight))
        wall_s = time.perf_counter() - started
        registry = Registry()
        workers = [registry.get(member.endpoint_id).endpoint for member in fleet.members]
        seen = [tokens_seen(worker.url, worker.api_key) for worker in workers if worker is not None]
    finally:
        fleet_down(fleet.id)
    return Run(
        policy=policy,
        requests=len(prompts),
        failed=failed,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
        wall_s=wall_s,
        busiest_share=max(seen) / sum(seen) if sum(seen) else 0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", default="cache_aware,round_robin,random")
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--words", type=int, default=500, help="words per document")
    parser.add_argument("--questions", type=int, default=4, help="questions per document")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="fresh fleets per policy (figures are means)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    policies = args.policies.split(",")

    rng = random.Random(args.seed)
    prompts = make_traffic(make_documents(args.documents, args.words, rng), args.questions, args.seed)
    runs: dict[str, list[Run]] = {policy: [] for policy in policies}
    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as scratch:
        os.environ["SANDSERVE_STATE_DIR"] = str(Path(scratch) / "state")
        for _ in range(args.repeats):
            for policy in policies:  # interleaved, so a slow spell of the machine hits every policy alike
                runs[policy].append(run_policy(policy, prompts, args.in_flight))

    title = (
        f"{len(prompts)} requests ({args.documents} documents x {args.questions} questions, "
        f"~{args.words} words each), {args.in_flight} in flight, 2 local workers, {args.repeats} fresh "
        "fleets per policy"
    )
    table = Table(title=title)
    for column in ("policy", "failed", "cached share (mean)", "per run", "wall s (mean)", "busiest worker"):
        table.add_column(column, justify="right")
    for policy, policy_runs in runs.items():
        table.add_row(
            policy,
            str(sum(run.failed for run in policy_runs)),
            f"{statistics.mean(run.cached_share for run in policy_runs):.3f}",
            " ".join(f"{run.cached_share:.3f}" for run in policy_runs),
            f"{statistics.mean(run.wall_s for run in policy_runs):.2f}",
            f"{100 * statistics.mean(run.busiest_share for run in policy_runs):.0f}%",
        )
    console = Console(width=120)
    console.print(table)
    if "cache_aware" in runs:
        aware = statistics.mean(run.cached_share for run in runs["cache_aware"])
        aware_s = statistics.mean(run.wall_s for run in runs["cache_aware"])
        for other in (policy for policy in policies if policy != "cache_aware"):
            share = statistics.mean(run.cached_share for run in runs[other])
            wall = statistics.mean(run.wall_s for run in runs[other])
            console.print(
                f"cache_aware / {other}: cached share x{aware / share:.2f}, wall time x{aware_s / wall:.2f}"
                if share
                else f"{other}: nothing cached"
            )


if __name__ == "__main__":
    main()
