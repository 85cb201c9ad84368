"""The benchmark client's own ceiling: how many streamed requests/s it can drive, and at what CPU cost,
against an instant local server (the scripted server with no delays, in a process of its own), side by
side with the guide's client (the OpenAI SDK's AsyncOpenAI) doing the same requests on the same server."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from sandserve.endpoint import Endpoint
from sandserve.errors import SandserveError
from sandserve.observe.bench import BenchConfig, LoadPlan, run_bench_sync
from sandserve.observe.datasets import BenchPrompt, given_prompts
from sandserve.tls import tls_context

PROMPT = [{"role": "user", "content": "ping"}]


@dataclass(frozen=True)
class CeilingRow:
    client: str
    requests: int
    concurrency: int
    seconds: float
    requests_per_s: float
    cpu_ms_per_request: float
    client_cpu: float
    """Client CPU seconds / wall seconds (1.0 = one core saturated)."""
    failed: int


@dataclass
class CeilingResult:
    output_tokens: int
    cores: int
    rows: list[CeilingRow] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        """sandserve's requests/s over the OpenAI SDK's, when both ran."""
        if len(self.rows) < 2 or not self.rows[1].requests_per_s:
            return None
        return self.rows[0].requests_per_s / self.rows[1].requests_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def instant_server(tokens: int) -> Iterator[str]:
    """The scripted server's canned-answer mode, in its own process (so its CPU is not the client's)."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandserve.observe.scripted",
            "--port",
            str(port),
            "--instant-tokens",
            str(tokens),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(url + "/health", timeout=1, verify=tls_context())  # any path answers
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                detail = process.stderr.read().decode(errors="replace")[-400:] if process.stderr else ""
                raise SandserveError(
                    f"The instant server for the client ceiling did not start: {detail or 'no output'}",
                    hint="Check that aiohttp imports in this environment "
                    "(`python -m sandserve.observe.scripted -h`).",
                )
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _ours(url: str, requests: int, concurrency: int, output_tokens: int) -> CeilingRow:
    endpoint = Endpoint(
        id="instant", url=url, model="scripted", engine="scripted", provider="local", auth="public"
    )
    source = given_prompts("ping", [BenchPrompt(PROMPT, output_tokens)])
    plan = LoadPlan("concurrency", (float(concurrency),), requests_per_level=requests)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = run_bench_sync(endpoint, source, BenchConfig(plan, warmup=8))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    metrics = run.result.levels[0].metrics
    assert metrics is not None
    return CeilingRow(
        client="sandserve bench (aiohttp, streaming)",
        requests=requests,
        concurrency=concurrency,
        seconds=metrics.duration_s,
        requests_per_s=metrics.request_throughput,
        cpu_ms_per_request=cpu * 1000 / requests,
        client_cpu=cpu / wall if wall > 0 else 0.0,
        failed=metrics.failed,
    )


def _openai_sdk(url: str, requests: int, concurrency: int, output_tokens: int) -> CeilingRow:
    import openai

    async def run() -> tuple[float, int]:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="EMPTY", max_retries=0)
        gate = asyncio.Semaphore(concurrency)
        failed = 0

        async def one() -> None:
            nonlocal failed
            async with gate:
                try:
                    stream = await client.chat.completions.create(  # type: ignore[call-overload]
                        model="scripted",
                        messages=PROMPT,
                        max_tokens=output_tokens,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    async for _chunk in stream:
                        pass
                except openai.OpenAIError:
                    failed += 1

        try:
            await asyncio.gather(*(one() for _ in range(8)))  # warm-up, as for ours
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(requests)))
            return time.perf_counter() - started, failed
        finally:
            await client.close()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    seconds, failed = asyncio.run(run())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return CeilingRow(
        client="openai AsyncOpenAI (the guide's client, streaming)",
        requests=requests,
        concurrency=concurrency,
        seconds=seconds,
        requests_per_s=(requests - failed) / seconds if seconds > 0 else 0.0,
        cpu_ms_per_request=cpu * 1000 / requests,
        client_cpu=cpu / wall if wall > 0 else 0.0,
        failed=failed,
    )


def measure_client_ceiling(
    *,
    requests: int = 5000,
    openai_requests: int = 1000,
    concurrency: int = 256,
    output_tokens: int = 4,
    compare_openai: bool = True,
) -> CeilingResult:
    """Both clients against one instant server; each request streams ``output_tokens`` chunks and a usage
    chunk. The SDK gets fewer requests (it is the slow one); rates are per second either way."""
    result = CeilingResult(output_tokens=output_tokens, cores=os.cpu_count() or 1)
    with instant_server(output_tokens) as url:
        result.rows.append(_ours(url, requests, concurrency, output_tokens))
        if compare_openai:
            result.rows.append(_openai_sdk(url, openai_requests, concurrency, output_tokens))
    return result
