"""The routing self-test (``sandserve fleet bench``): the same traffic through fresh fleets under each policy.

Traffic: documents, each asked several questions, document first (the document is the prefix a worker can
reuse from its cache), shuffled with a fixed seed. Each run gets a fresh fleet (cold caches). Per run: the
cached share (cached prompt tokens / prompt tokens, from the engines' own usage reports), time to first token
and end-to-end latency of every request (streamed), and failed requests. The ideal cached share for the
traffic comes from the workers' own tokenizer: the first question of each document can reuse only the chat
template's opening; every later one its longest common token prefix with an earlier prompt of its document.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from sandserve.endpoint import Endpoint
from sandserve.engines import get_engine
from sandserve.fleet.model import DEFAULT_GATEWAY
from sandserve.fleet.verbs import fleet_down, fleet_up
from sandserve.serve.ledger import Registry
from sandserve.spec import ServeSpec

QUESTIONS = (
    "What is this document about?",
    "Which place does it mention first?",
    "Summarise it in one sentence.",
    "What is its tone?",
    "Which word appears most?",
    "How does it end?",
)
WORDS = [
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


@dataclass(frozen=True)
class Traffic:
    prompts: tuple[str, ...]
    documents: tuple[int, ...]
    """The document each prompt asks about."""
    description: str


def random_text(rng: random.Random, words: int) -> str:
    """``words`` words drawn at random: texts that share no prefix beyond a word or two."""
    return " ".join(rng.choice(WORDS) for _ in range(words))


def make_traffic(documents: int = 8, words: int = 500, questions: int = 4, seed: int = 0) -> Traffic:
    rng = random.Random(seed)
    texts = [random_text(rng, words) for _ in range(documents)]
    pairs = [
        (f"{text}\n\nQuestion: {QUESTIONS[q % len(QUESTIONS)]}", number)
        for number, text in enumerate(texts)
        for q in range(questions)
    ]
    random.Random(seed).shuffle(pairs)
    return Traffic(
        prompts=tuple(prompt for prompt, _ in pairs),
        documents=tuple(document for _, document in pairs),
        description=f"{len(pairs)} requests ({documents} documents x {questions} questions, ~{words} words "
        "each)",
    )


@dataclass
class PolicyRun:
    policy: str
    gateway: str
    requests: int
    failed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


async def send_traffic(
    endpoint: Endpoint,
    prompts: Sequence[str],
    in_flight: int,
    max_tokens: int,
    run: PolicyRun,
    on_progress: Callable[[PolicyRun], None] | None = None,
) -> None:
    """Every prompt once, ``in_flight`` at a time, streamed: TTFT at the first chunk with text;
    ``on_progress`` sees the run after each request."""
    client = endpoint.async_openai(max_retries=0, timeout=300)
    gate = asyncio.Semaphore(in_flight)

    async def one(prompt: str) -> None:
        async with gate:
            started = time.perf_counter()
            first: float | None = None
            usage = None
            try:
                stream = await client.chat.completions.create(
                    model=endpoint.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_tokens,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter()
                    if chunk.usage is not None:
                        usage = chunk
            except Exception as exc:
                run.failed += 1
                run.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                if on_progress is not None:
                    on_progress(run)
                return
            done = time.perf_counter()
        run.e2e_s.append(done - started)
        run.ttft_s.append((first or done) - started)
        if usage is not None:
            stats = endpoint.cache_stats(usage)
            run.prompt_tokens += stats.prompt_tokens
            run.cached_tokens += stats.cached_tokens
        if on_progress is not None:
            on_progress(run)

    try:
        await asyncio.gather(*(one(prompt) for prompt in prompts))
    finally:
        await client.close()


def ideal_cached_share(worker: Endpoint, traffic: Traffic) -> float | None:
    """The most the traffic can take from caches, from the worker's own chat template and tokenizer
    (the engine's template and tokenize calls: llama-server's /apply-template and /tokenize); None where the
    engine offers neither. A prompt can reuse
    its longest common token prefix with any earlier prompt (for the first question of a document that is only
    the chat template's opening, which the readiness probe already cached)."""
    from sandserve.fleet.gateway import READINESS_PROMPT

    engine = get_engine(worker.engine)
    tokens: list[list[int]] = []
    with httpx.Client(base_url=worker.url, headers=worker.request_headers(), timeout=60) as http:
        for prompt in (READINESS_PROMPT, *traffic.prompts):
            template = engine.template_call([{"role": "user", "content": prompt}])
            templated = http.post(template.path, json=template.body) if template else None
            if templated is None or templated.status_code != 200:
                return None
            tokenize = engine.tokenize_call(templated.json()["prompt"], parse_special=True)
            tokenized = http.post(tokenize.path, json=tokenize.body) if tokenize else None
            if tokenized is None or tokenized.status_code != 200:
                return None
            tokens.append(list(tokenized.json()["tokens"]))
    readiness, prompts = tokens[0], tokens[1:]
    reusable = 0
    for index, prompt_tokens in enumerate(prompts):
        earlier = [readiness, *prompts[:index]]
        reusable += max(_common_prefix(prompt_tokens, other) for other in earlier)
    total = sum(len(prompt_tokens) for prompt_tokens in prompts)
    return reusable / total if total else None


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def run_policy(
    spec: ServeSpec,
    policy: str,
    traffic: Traffic,
    *,
    workers: int = 2,
    in_flight: int = 4,
    max_tokens: int = 8,
    gateway: str = DEFAULT_GATEWAY,
    registry: Registry | None = None,
    with_ideal: bool = False,
    on_progress: Callable[[PolicyRun], None] | None = None,
) -> tuple[PolicyRun, float | None]:
    """One fresh fleet, the traffic once, the fleet down; with ``with_ideal`` also the ideal cached share.
    ``on_progress`` sees the run before its fleet boots and after each request."""
    registry = registry or Registry()
    run = PolicyRun(policy=policy, gateway=gateway, requests=len(traffic.prompts))
    if on_progress is not None:
        on_progress(run)
    fleet = fleet_up(spec, workers, policy, gateway=gateway, registry=registry)
    try:
        ideal = None
        if with_ideal:
            worker = registry.get(fleet.members[0].endpoint_id).endpoint
            ideal = ideal_cached_share(worker, traffic) if worker is not None else None
        started = time.perf_counter()
        asyncio.run(send_traffic(fleet.endpoint, traffic.prompts, in_flight, max_tokens, run, on_progress))
        run.wall_s = time.perf_counter() - started
    finally:
        fleet_down(fleet.id, registry=registry)
    return run, ideal


def compare_policies(
    spec: ServeSpec,
    policies: Sequence[str],
    traffic: Traffic,
    *,
    repeats: int = 1,
    gateways: Sequence[str] = (DEFAULT_GATEWAY,),
    on_run: Callable[[PolicyRun], None] | None = None,
    on_progress: Callable[[PolicyRun], None] | None = None,
    workers: int = 2,
    in_flight: int = 4,
    max_tokens: int = 8,
) -> tuple[list[PolicyRun], float | None]:
    """Every (gateway, policy) ``repeats`` times, interleaved so that a slow spell of the machine hits each
    alike; the ideal cached share is measured on the first fleet."""
    runs: list[PolicyRun] = []
    ideal: float | None = None
    for repeat in range(repeats):
        for gateway in gateways:
            for policy in policies:
                first = repeat == 0 and not runs
                run, measured = run_policy(
                    spec,
                    policy,
                    traffic,
                    workers=workers,
                    in_flight=in_flight,
                    max_tokens=max_tokens,
                    gateway=gateway,
                    with_ideal=first,
                    on_progress=on_progress,
                )
                ideal = measured if first else ideal
                runs.append(run)
                if on_run is not None:
                    on_run(run)
    return runs, ideal
