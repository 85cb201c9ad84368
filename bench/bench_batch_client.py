"""Client overhead of sandserve.batch.runner against the guide's client, and the runner's memory at scale.

(a) The same N chat requests (12,000-character prompts by default) sent to an instant local server by
    sandserve.batch.runner.run_batch (an input file in, an output file out) and by the guide's client
    (openai.AsyncOpenAI + asyncio.gather of every request at once), each in a fresh process: requests/s of
    each and their ratio, with CPU time per request.
(b) The runner's peak memory (ru_maxrss of its process) at 10,000 and 100,000 requests, in input order (it
    streams the input, so memory should stay flat) and in prefix order (it keeps a short key and an offset per
    request, not the bodies: goal within 2x of input order), side by side with their ratio.

The server is a minimal HTTP/1.1 keep-alive server on asyncio, in a separate process, that answers every
request with the same OpenAI-shaped completion: it costs far less CPU than either client, so the figures are
the clients' own. Prints figures, asserts nothing.

    .venv/bin/python bench/bench_batch_client.py --requests 5000 --memory-requests 10000,100000
    .venv/bin/python bench/bench_batch_client.py --requests 0 --memory-requests 100000  # memory only

Measured on the shared 2-core machine (`--requests 0 --memory-requests 10000,100000`, 1,000-character
prompts, one run, both orders side by side): 10,000 requests: input 41 MiB, prefix 44 MiB (1.06x);
100,000 requests (115 MB file): input 55 MiB, prefix 79 MiB (1.45x). Before prefix order kept only keys and
offsets, it needed about 350 MiB against 58 MiB at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESPONSE_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": '{"author": "Austen"}'},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 2914,
            "completion_tokens": 12,
            "total_tokens": 2926,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(RESPONSE_BODY)).encode()
    + b"\r\n\r\n"
    + RESPONSE_BODY
)
MODEL = "bench"


# --- the instant server (its own process) -----------------------------------------------------------


class _InstantHttp(asyncio.Protocol):
    """Reads each request (headers + Content-Length body) and answers with RESPONSE; keeps the connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in bytes(self.buffer[:head_end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            del self.buffer[:end]
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def serve() -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_InstantHttp, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


# --- the clients (each in its own process) -----------------------------------------------------------


def _resources() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mib": usage.ru_maxrss / 1024}


def run_runner(
    url: str, input_path: str, output_path: str, concurrency: int | None, order: str = "input"
) -> dict[str, Any]:
    from sandserve.batch.runner import run_batch_sync
    from sandserve.endpoint import Endpoint

    cpu_before = _resources()["cpu_s"]
    started = time.perf_counter()
    summary = run_batch_sync(
        Endpoint(id="bench", url=url, model=MODEL),
        input_path,
        output_path,
        concurrency=concurrency,
        order=order,  # type: ignore[arg-type]
    )
    wall_s = time.perf_counter() - started
    return {
        "wall_s": wall_s,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "concurrency": summary.concurrency,
        **_resources(),
        "cpu_s": _resources()["cpu_s"] - cpu_before,
    }


def run_guide_client(url: str, input_path: str) -> dict[str, Any]:
    import openai

    with open(input_path, "rb") as file:
        prompts = [json.loads(line)["body"]["messages"][0]["content"] for line in file]

    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="EMPTY")
        responses = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=2048
                )
                for prompt in prompts
            )
        )
        await client.close()
        return len(responses)

    cpu_before = _resources()["cpu_s"]
    started = time.perf_counter()
    succeeded = asyncio.run(main())
    wall_s = time.perf_counter() - started
    return {
        "wall_s": wall_s,
        "succeeded": succeeded,
        "failed": len(prompts) - succeeded,
        "concurrency": len(prompts),
        **_resources(),
        "cpu_s": _resources()["cpu_s"] - cpu_before,
    }


# --- the driver ------------------------------------------------------------------------------------


def write_input(path: Path, requests: int, prompt_chars: int, seed: int = 0) -> None:
    """Distinct prompts of prompt_chars characters (a shuffled vocabulary, so no two share a long prefix)."""
    rng = random.Random(seed)
    words = [rng.choice("abcdefghijklmnopqrstuvwxyz") * rng.randint(1, 9) for _ in range(5000)]
    text = " ".join(rng.choice(words) for _ in range(prompt_chars))
    with path.open("w") as file:
        for index in range(requests):
            start = rng.randrange(0, len(text) - prompt_chars)
            prompt = f"{index} {text[start : start + prompt_chars]}"[:prompt_chars]
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 2048}
            line = {
                "custom_id": f"req-{index}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            file.write(json.dumps(line) + "\n")


def child(*args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, f"http://127.0.0.1:{server.stdout.readline().strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000, help="requests in the client comparison")
    parser.add_argument("--prompt-chars", type=int, default=12_000, help="prompt length in the comparison")
    parser.add_argument("--concurrency", type=int, default=None, help="runner concurrency (default: its own)")
    parser.add_argument(
        "--memory-requests",
        default="10000,100000",
        help="comma-separated request counts for the memory runs ('' to skip)",
    )
    parser.add_argument(
        "--memory-prompt-chars",
        type=int,
        default=1_000,
        help="prompt length in the memory runs (100,000 x 12,000 characters: a 1.2 GB file)",
    )
    parser.add_argument("--skip-guide", action="store_true", help="skip the guide's client (slow)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        return serve()
    if args.child:
        kind, url, *rest = args.child
        if kind == "runner":
            concurrency = int(rest[2]) if rest[2] != "-" else None
            result = run_runner(url, rest[0], rest[1], concurrency, rest[3] if len(rest) > 3 else "input")
        else:
            result = run_guide_client(url, rest[0])
        return print(json.dumps(result))

    console = Console(width=120)
    server, url = start_server()
    concurrency_arg = str(args.concurrency) if args.concurrency else "-"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as workdir:
            work = Path(workdir)
            if args.requests:
                comparison = work / "compare.jsonl"
                write_input(comparison, args.requests, args.prompt_chars)
                runner = child("runner", url, str(comparison), str(work / "out.jsonl"), concurrency_arg)
                rows = {"sandserve.batch.run_batch": runner}
                if not args.skip_guide:
                    rows["AsyncOpenAI + gather (guide)"] = child("guide", url, str(comparison))
                print_comparison(console, rows, args)

            memory_rows = []
            for count in [int(n) for n in args.memory_requests.split(",") if n.strip()]:
                path = work / f"memory-{count}.jsonl"
                write_input(path, count, args.memory_prompt_chars, seed=count)
                for order in ("input", "prefix"):
                    out = work / f"out-{count}-{order}.jsonl"
                    row = child("runner", url, str(path), str(out), concurrency_arg, order)
                    memory_rows.append((count, order, path.stat().st_size, row))
                    for produced in work.glob(f"out-{count}-{order}.jsonl*"):
                        produced.unlink()
                path.unlink()
            if memory_rows:
                print_memory(console, memory_rows, args)
    finally:
        server.terminate()
        server.wait()


def print_comparison(console: Console, rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"{args.requests:,} requests, {args.prompt_chars:,}-character prompts, instant local "
        f"server (separate process), {os.cpu_count()} cores"
    )
    for column in ("client", "in flight", "ok", "wall s", "requests/s", "CPU ms/request", "peak RSS MiB"):
        table.add_column(column, justify="left" if column == "client" else "right")
    for name, row in rows.items():
        rate = row["succeeded"] / row["wall_s"]
        cpu_ms = 1000 * row["cpu_s"] / args.requests
        table.add_row(
            name,
            f"{row['concurrency']:,}",
            f"{row['succeeded']:,}",
            f"{row['wall_s']:.2f}",
            f"{rate:,.0f}",
            f"{cpu_ms:.2f}",
            f"{row['max_rss_mib']:.0f}",
        )
    console.print(table)
    runner = rows["sandserve.batch.run_batch"]
    runner_rate = runner["succeeded"] / runner["wall_s"]
    console.print(f"runner: {runner_rate:,.0f} requests/s (target >= 3,000 on 2 cores)")
    guide = rows.get("AsyncOpenAI + gather (guide)")
    if guide:
        ratio = runner_rate / (guide["succeeded"] / guide["wall_s"])
        console.print(f"runner / guide's client: {ratio:.1f}x (target >= 10x)")


def print_memory(
    console: Console, rows: list[tuple[int, str, int, dict[str, Any]]], args: argparse.Namespace
) -> None:
    table = Table(title=f"run_batch peak memory, {args.memory_prompt_chars:,}-character prompts")
    for column in ("requests", "order", "input MB", "ok", "wall s", "requests/s", "peak RSS MiB", "vs input"):
        table.add_column(column, justify="right")
    input_rss = {count: row["max_rss_mib"] for count, order, _, row in rows if order == "input"}
    for count, order, size, row in rows:
        table.add_row(
            f"{count:,}",
            order,
            f"{size / 1e6:,.0f}",
            f"{row['succeeded']:,}",
            f"{row['wall_s']:.1f}",
            f"{row['succeeded'] / row['wall_s']:,.0f}",
            f"{row['max_rss_mib']:.0f}",
            f"{row['max_rss_mib'] / input_rss[count]:.2f}x" if count in input_rss else "-",
        )
    console.print(table)
    console.print("goal: prefix order within 2x of input order's peak memory")


if __name__ == "__main__":
    main()
