"""What reading a prompt a few tokens a step costs: prompt tokens/s at each `-b`/`-ub`, and how long one step
takes, which is how long a person's request can wait behind a batch's prompts (a step is never cut short; a
new request gets a slot only between steps), side by side in one run. sandserve's local server keeps
llama-server's own step for everyone's prompts and feeds batch prompts into their slots `FEED_TOKENS` at a
time (engines/prompt_feed.py): its row shows what that costs a batch's prompts.

    .venv/bin/python bench/bench_prompt_step.py                     # SmolLM2-135M, 3 interleaved rounds
    .venv/bin/python bench/bench_prompt_step.py --steps 16,64,2048 --prompt-words 500

Every configuration is a llama-server started by hand with the threads MachineFit gives a lone server on this
machine and sandserve's other flags, one at a time; per round it reads one fresh prompt of about
`--prompt-words` words (nothing cached) and reports llama-server's own prompt tokens/s. Rounds are interleaved
(all step sizes once, then again in reverse), so load from elsewhere falls on all of them alike. Prints
figures; asserts nothing. Last line: `prompt step: batch prompts fed <N> tokens a step read <X>x the prompt
tokens/s of llama-server's default, a step <T> ms against <D> ms`.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from bench_threads import Server, running
from rich.console import Console
from rich.table import Table

#: llama-server's own default (``-b``; ``-ub`` is 512 there).
LLAMA_DEFAULT = 2048


@contextmanager
def with_step(step: int, model_path: Path) -> Iterator[Server]:
    from sandserve.engines.llamacpp import CACHE_RAM_MIB, MAX_SLOT_CONTEXT, MachineFit
    from sandserve.engines.llamacpp_build import ensure_llama_server
    from sandserve.providers.local import free_port

    fit, port = MachineFit(), free_port()
    argv = [str(ensure_llama_server()), "-m", str(model_path), "--alias", "m"]
    argv += ["-c", str(MAX_SLOT_CONTEXT * fit.slots), "-np", str(fit.slots)]
    argv += ["-t", str(fit.threads), "-tb", str(fit.batch_threads), "--cache-ram", str(CACHE_RAM_MIB)]
    if step != LLAMA_DEFAULT:
        argv += ["-b", str(step), "-ub", str(step)]
    argv += ["--jinja", "--no-ui", "--offline", "--host", "127.0.0.1", "--port", str(port)]
    server = Server(f"http://127.0.0.1:{port}", {}, "m", f"-t {fit.threads} -tb {fit.batch_threads}")
    with running(argv, server):
        yield server


def prompt_rate(server: Server, prompt: str) -> float:
    body = {"prompt": prompt, "n_predict": 1, "cache_prompt": False}
    answer = httpx.post(server.url + "/completion", json=body, timeout=600).json()
    return float(answer["timings"]["prompt_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m", help="a local preset or GGUF file")
    parser.add_argument("--steps", default="8,16,32,64,128,2048", help="-b/-ub values (2048: the default)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--prompt-words", type=int, default=1000, help="words per prompt (~1.3 tokens each)")
    args = parser.parse_args()

    from sandserve.engines.modelfetch import local_model_file
    from sandserve.engines.prompt_feed import FEED_TOKENS
    from sandserve.observe.datasets import random_prompts

    steps = sorted({int(step) for step in args.steps.split(",")} | {FEED_TOKENS, LLAMA_DEFAULT})
    model_path = local_model_file(args.model)
    console, prompts = Console(), random_prompts(args.prompt_words, 1)
    rates: dict[int, list[float]] = {step: [] for step in steps}
    threads = ""
    for round_index in range(args.rounds):
        for step in steps if round_index % 2 == 0 else steps[::-1]:
            with with_step(step, model_path) as server:
                threads = server.flags
                [prompt] = prompts.take(1)  # a new one each time (and a new server)
                rates[step].append(prompt_rate(server, prompt.messages[0]["content"]))
            console.print(f"round {round_index + 1}/{args.rounds}: -b {step}: {rates[step][-1]:.0f} tokens/s")

    median = {step: statistics.median(values) for step, values in rates.items()}
    step_ms = {step: 1000 * step / median[step] for step in steps}
    table = Table(title=f"prompt step: {args.model}, {threads}, median of {args.rounds} rounds")
    for header in ("-b/-ub", "prompt tokens/s", "of default", "one full step"):
        table.add_column(header, justify="right")
    for step in steps:
        mark = " (batch prompts)" if step == FEED_TOKENS else " (default)" if step == LLAMA_DEFAULT else ""
        table.add_row(
            f"{step}{mark}",
            f"{median[step]:.0f}",
            f"{median[step] / median[LLAMA_DEFAULT]:.2f}",
            f"{step_ms[step]:.0f} ms",
        )
    console.print(table)
    console.print(
        f"prompt step: batch prompts fed {FEED_TOKENS} tokens a step read "
        f"{median[FEED_TOKENS] / median[LLAMA_DEFAULT]:.2f}x the prompt tokens/s of llama-server's "
        f"default, a step {step_ms[FEED_TOKENS]:.0f} ms against {step_ms[LLAMA_DEFAULT]:.0f} ms"
    )


if __name__ == "__main__":
    main()
