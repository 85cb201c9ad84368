"""What the llama-server adapter costs: the same requests straight to llama-server and through the adapter,
side by side, against one server (so the model's own time is the same on both paths).

    .venv/bin/python bench/bench_adapter.py      # the tiny model: the adapter's overhead stands out
    .venv/bin/python bench/bench_adapter.py --model smollm2-135m --requests 20

Per path: the median and p90 latency of a one-token chat completion, and of a streamed 32-token reply its
time to first chunk and its mean gap between chunks (a buffering proxy would show a first chunk as late as the
last).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import subprocess
import threading
import time

import httpx
from rich.console import Console
from rich.table import Table


def start_llama_server(model: str, port: int, key: str) -> subprocess.Popen[bytes]:
    from sandserve.engines.llamacpp_build import ensure_llama_server
    from sandserve.engines.modelfetch import local_model_file

    binary = ensure_llama_server()
    path = local_model_file(model)
    argv = [str(binary), "-m", str(path), "-c", "8192", "-np", "2", "-t", "1", "--jinja", "--no-ui"]
    argv += ["--offline", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "LLAMA_API_KEY": key}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_adapter(upstream_port: int, key: str, port: int) -> None:
    """The adapter's app in a thread of this process (no auth of its own: only its translation is timed)."""
    from aiohttp import web

    from sandserve.engines.llamacpp_adapter import Upstream, build_app

    ready = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(build_app(Upstream(upstream_port, key), None, None))
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(30)


def wait_ready(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} never became ready")


def one_token(client: httpx.Client, url: str) -> float:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}
    started = time.perf_counter()
    client.post(url + "/v1/chat/completions", json=body).raise_for_status()
    return time.perf_counter() - started


def streamed(client: httpx.Client, url: str) -> tuple[float, float]:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Count to fifty."}],
        "max_tokens": 32,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    arrivals = []
    with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return arrivals[0] - started, statistics.mean(gaps) if gaps else 0.0


def measure(url: str, headers: dict[str, str], requests: int) -> dict[str, float]:
    with httpx.Client(headers=headers, timeout=120) as client:
        one_token(client, url)  # warm the connection and the slot
        latencies = sorted(one_token(client, url) for _ in range(requests))
        streams = [streamed(client, url) for _ in range(max(3, requests // 10))]
    return {
        "median_ms": 1000 * statistics.median(latencies),
        "p90_ms": 1000 * latencies[int(0.9 * (len(latencies) - 1))],
        "first_chunk_ms": 1000 * statistics.median(first for first, _ in streams),
        "chunk_gap_ms": 1000 * statistics.median(gap for _, gap in streams),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="a local preset or GGUF file (default: tiny)")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()

    from sandserve.providers.local import free_port

    key = secrets.token_urlsafe(16)
    server_port, adapter_port = free_port(), free_port()
    server = start_llama_server(args.model, server_port, key)
    try:
        direct = f"http://127.0.0.1:{server_port}"
        wait_ready(direct, {"Authorization": f"Bearer {key}"})
        start_adapter(server_port, key, adapter_port)
        adapted = f"http://127.0.0.1:{adapter_port}"
        rows = {}
        for _round in range(2):  # interleaved, so load from elsewhere hits both paths alike
            for name, url, headers in (
                ("llama-server", direct, {"Authorization": f"Bearer {key}"}),
                ("through the adapter", adapted, {}),
            ):
                figures = measure(url, headers, args.requests // 2)
                rows.setdefault(name, []).append(figures)
    finally:
        server.terminate()
        server.wait(timeout=30)

    merged = {name: {k: statistics.mean(f[k] for f in runs) for k in runs[0]} for name, runs in rows.items()}
    table = Table(title=f"adapter overhead, {args.model}, {args.requests} one-token requests per path")
    for column in ("path", "median ms", "p90 ms", "stream: first chunk ms", "stream: gap between chunks ms"):
        table.add_column(column, justify="right")
    for name, figures in merged.items():
        table.add_row(
            name,
            *(f"{figures[k]:.2f}" for k in ("median_ms", "p90_ms", "first_chunk_ms", "chunk_gap_ms")),
        )
    console = Console()
    console.print(table)
    base, front = merged["llama-server"], merged["through the adapter"]
    console.print(
        f"overhead per request: {front['median_ms'] - base['median_ms']:+.2f} ms median; "
        f"first streamed chunk {front['first_chunk_ms'] - base['first_chunk_ms']:+.2f} ms; "
        f"gap between chunks {front['chunk_gap_ms'] - base['chunk_gap_ms']:+.2f} ms (no buffering: gaps stay)"
    )


if __name__ == "__main__":
    main()
