"""How many threads llama-server should use on this machine: a search over `-t`, `-tb` and `-np`, and
sandserve's own default local endpoint beside the best configuration found, in one run.

    .venv/bin/python bench/bench_threads.py                   # SmolLM2-135M, 3 interleaved rounds
    .venv/bin/python bench/bench_threads.py --rounds 1 --prompt-words 500    # quicker, noisier

Every configuration is a llama-server started by hand with those flags (no adapter); "sandserve" is a real
local endpoint (`up`: its adapter in front, the flags MachineFit chose when it started, which leave out the
cores other work keeps busy at that moment; its row lists every choice it made). Per configuration and
round, two bursts of `--in-flight` requests at once, on prompts no earlier request shared (the prompt cache
never helps):
- prefill: prompts of about `--prompt-words` words and one output token: prompt tokens/s;
- generation: short prompts and `--output-tokens` tokens each (ignore_eos): output tokens/s;
and one request alone, `--output-tokens` tokens: its output tokens/s. llama.cpp computes a step of more than
one token (prefill, or several requests decoding together) with `-tb` threads and a step of one token (one
request decoding alone) with `-t` threads, so the third figure is the one `-t` decides.
A configuration's score is the geometric mean of the three rates. Rounds are interleaved (every configuration
once, then all again in a rotated order), so load from elsewhere on the machine falls on all of them alike.
Only one server runs at a time. Prints figures; asserts nothing. Uses a temporary state directory, never
your ledger. Last line: `threads: sandserve <X> of best (<flags of the best>)`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import math
import os
import random
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

SANDSERVE = "sandserve"


@dataclass(frozen=True)
class Config:
    threads: int
    batch_threads: int
    slots: int

    @property
    def flags(self) -> str:
        return f"-t {self.threads} -tb {self.batch_threads} -np {self.slots}"


@dataclass
class Server:
    url: str
    headers: dict[str, str]
    model: str
    flags: str = ""


@dataclass
class Figures:
    prefill: list[float] = field(default_factory=list)
    generation: list[float] = field(default_factory=list)
    alone: list[float] = field(default_factory=list)

    def medians(self) -> tuple[float, float, float]:
        return (
            statistics.median(self.prefill),
            statistics.median(self.generation),
            statistics.median(self.alone),
        )

    def score(self) -> float:
        return math.prod(self.medians()) ** (1 / 3)


def thread_counts(cores: int) -> list[int]:
    """1, the powers of two below the core count, and every core."""
    counts = {1, cores}
    counts.update(2**power for power in range(1, cores.bit_length()) if 2**power < cores)
    return sorted(counts)


def configurations(cores: int, slot_counts: list[int]) -> list[Config]:
    counts = thread_counts(cores)
    return [Config(t, tb, np) for t, tb, np in itertools.product(counts, counts, slot_counts)]


def wait_ready(server: Server, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"llama-server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(server.url + "/health", headers=server.headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{server.url} never became ready")


@contextmanager
def by_hand(config: Config, model_path: Path) -> Iterator[Server]:
    """llama-server with ``config``'s flags and sandserve's other ones (context per slot, RAM cache)."""
    from sandserve.engines.llamacpp import CACHE_RAM_MIB, MAX_SLOT_CONTEXT
    from sandserve.engines.llamacpp_build import ensure_llama_server
    from sandserve.providers.local import free_port

    port = free_port()
    argv = [str(ensure_llama_server()), "-m", str(model_path), "--alias", "m"]
    argv += ["-c", str(MAX_SLOT_CONTEXT * config.slots), "-np", str(config.slots)]
    argv += ["-t", str(config.threads), "-tb", str(config.batch_threads), "--cache-ram", str(CACHE_RAM_MIB)]
    argv += ["--jinja", "--no-ui", "--offline", "--host", "127.0.0.1", "--port", str(port)]
    with running(argv, Server(f"http://127.0.0.1:{port}", {}, "m")) as server:
        yield server


@contextmanager
def running(argv: list[str], server: Server) -> Iterator[Server]:
    """llama-server started with ``argv``, once ``server`` answers; stopped after."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def sandserve_default(model: str) -> Iterator[Server]:
    """A real local endpoint, as `sandserve up --model MODEL` brings it up (adapter and all)."""
    from sandserve.providers.handles import LocalHandle
    from sandserve.serve import lifecycle
    from sandserve.serve.ledger import Registry
    from sandserve.serve.resolve import resolve_spec

    endpoint = lifecycle.up(resolve_spec(model, provider="local"))
    try:
        handle = Registry().get(endpoint.id).sandbox
        flags = launched_flags(handle.pid if isinstance(handle, LocalHandle) else None)
        yield Server(endpoint.base_url.removesuffix("/v1"), endpoint.request_headers(), endpoint.model, flags)
    finally:
        registry = Registry()
        lifecycle.down(registry.get(endpoint.id), registry)


def launched_flags(adapter_pid: int | None) -> str:
    """``-t``/``-tb``/``-np`` of the llama-server a local endpoint's adapter started (its child): what
    MachineFit chose when that server started."""
    children = Path(f"/proc/{adapter_pid}/task/{adapter_pid}/children").read_text().split()
    for child in children:
        argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
        if "-tb" in argv:
            return " ".join(f"{flag} {argv[argv.index(flag) + 1]}" for flag in ("-t", "-tb", "-np"))
    return "?"


def burst(server: Server, prompts: list[str], body: dict[str, object], usage_key: str) -> float:
    """All ``prompts`` at once; the tokens of ``usage_key`` they report, per second of wall time."""

    def one(client: httpx.Client, prompt: str) -> int:
        answer = client.post(
            server.url + "/v1/completions", json={"model": server.model, "prompt": prompt, **body}
        )
        answer.raise_for_status()
        return int(answer.json()["usage"][usage_key])

    with (
        httpx.Client(headers=server.headers, timeout=600) as client,
        concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool,
    ):
        started = time.perf_counter()
        tokens = sum(pool.map(lambda prompt: one(client, prompt), prompts))
        return tokens / (time.perf_counter() - started)


def label(name: Config | str, launched: set[str]) -> str:
    return name.flags if isinstance(name, Config) else f"sandserve: {' / '.join(sorted(launched)) or '...'}"


def measure(server: Server, args: argparse.Namespace, rng: random.Random, figures: Figures) -> None:
    from sandserve.fleet.routing_bench import random_text

    burst(server, [random_text(rng, 20)], {"max_tokens": 1}, "prompt_tokens")  # warm: first-use costs
    long_prompts = [random_text(rng, args.prompt_words) for _ in range(args.in_flight)]
    figures.prefill.append(burst(server, long_prompts, {"max_tokens": 1, "temperature": 0}, "prompt_tokens"))
    short_prompts = [random_text(rng, 12) for _ in range(args.in_flight)]
    sampling = {"max_tokens": args.output_tokens, "temperature": 0, "ignore_eos": True}
    figures.generation.append(burst(server, short_prompts, sampling, "completion_tokens"))
    figures.alone.append(burst(server, [random_text(rng, 12)], sampling, "completion_tokens"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m", help="a local preset or GGUF file")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--in-flight", type=int, default=4, help="requests at once (default 4)")
    parser.add_argument("--prompt-words", type=int, default=1500, help="prefill prompts (~1.3 tokens a word)")
    parser.add_argument("--output-tokens", type=int, default=32, help="generation: tokens per request")
    parser.add_argument("--slots", default="2,4", help="-np values to search (default 2,4)")
    args = parser.parse_args()
    console = Console()
    # A `kill` stops the run as Ctrl-C does: the server under measurement is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    from sandserve.engines.llamacpp import available_cores
    from sandserve.engines.llamacpp_build import ensure_llama_server
    from sandserve.engines.modelfetch import local_model_file

    ensure_llama_server()
    model_path = local_model_file(args.model)
    cores = available_cores()
    configs = configurations(cores, [int(value) for value in args.slots.split(",")])
    launched: set[str] = set()  # the flags sandserve chose, at each of its launches
    names: list[Config | str] = [SANDSERVE, *configs]
    results: dict[Config | str, Figures] = {name: Figures() for name in names}
    rng = random.Random(0)
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="sandserve-bench-") as state:
        os.environ["SANDSERVE_STATE_DIR"] = state
        for round_number in range(args.rounds):
            rotated = names[round_number::] + names[:round_number]
            for name in rotated if round_number % 2 == 0 else reversed(rotated):
                console.print(f"round {round_number + 1}/{args.rounds}: {label(name, set())}", end="")
                server = (
                    by_hand(name, model_path) if isinstance(name, Config) else sandserve_default(args.model)
                )
                with server as running:
                    if running.flags:
                        console.print(f" ({running.flags})", end="")
                        launched.add(running.flags)
                    measure(running, args, rng, results[name])
                figures = results[name]
                console.print(
                    f": prefill {figures.prefill[-1]:.1f}, decode x{args.in_flight} "
                    f"{figures.generation[-1]:.1f}, decode x1 {figures.alone[-1]:.1f} tokens/s"
                )

    searched = [(name, figures) for name, figures in results.items() if isinstance(name, Config)]
    best_name, best = max(searched, key=lambda item: item[1].score())
    table = Table(
        title=f"llama-server threads: {args.model}, {cores} cores, median of {args.rounds} rounds",
        caption=f"tokens/s: prompt tokens of {args.in_flight} prompts at once (prefill); output tokens of "
        f"{args.in_flight} requests decoding at once, and of one alone. Score: their geometric mean. Load "
        f"average at the start: {load:.1f}.",
    )
    columns = ("flags", "prefill", f"decode x{args.in_flight}", "decode x1", "score", "of best")
    table.add_column(columns[0], no_wrap=True)  # at 80 columns the headers wrap, never the flags
    for column in columns[1:]:
        table.add_column(column, justify="right")
    for name, figures in sorted(results.items(), key=lambda item: -item[1].score()):
        table.add_row(
            label(name, launched),
            *(f"{rate:.1f}" for rate in figures.medians()),
            f"{figures.score():.1f}",
            f"{figures.score() / best.score():.2f}",
        )
    console.print(table)
    # The same flags by hand tell the flags apart from the rest of the endpoint (its adapter, the moment).
    for name, figures in searched:
        if {name.flags} == launched:
            console.print(
                f"sandserve's flags by hand ({name.flags}): {figures.score() / best.score():.2f} of best"
            )
    share = results[SANDSERVE].score() / best.score()
    print(f"threads: sandserve {share:.2f} of best ({best_name.flags})")


if __name__ == "__main__":
    main()
