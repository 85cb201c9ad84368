"""Every reader of a server's bytes survives any bytes: random, truncated, mutated and non-UTF-8 bodies fed
to the load readers (/v1/loads, /slots, /metrics), the gateway's view (/workers, its metrics), the benchmark's
stream parser and the adapter's SSE rewriter. A failure is a failed reading that says why, never an exception.

The cases are drawn from a seeded generator (SANDSERVE_FUZZ_SEED picks another seed, SANDSERVE_FUZZ_CASES
another count), so a failure is reproducible from the seed the test prints. Real bodies (the shapes the
servers send) are the starting points; the mutations are the ones a proxy, a crash mid-write or a confused
server produce: a cut, flipped bytes, a Latin-1 or binary stretch, a value of another type, a number
that is not finite.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from sandserve.endpoint import Endpoint
from sandserve.engines.llamacpp_adapter import _rewrite_sse_line, sglang_shapes
from sandserve.engines.load_formats import parse_slots, parse_v1_loads
from sandserve.observe.gateway_view import gateway_metrics, gateway_workers, parse_gateway_metrics
from sandserve.observe.loads import (
    EndpointLoad,
    LoadProbe,
    merge,
    parse_prometheus,
)
from sandserve.observe.metrics import RequestRecord
from sandserve.observe.prometheus import parse_metrics
from sandserve.observe.stream import bench_session, stream_chat

SEED = int(os.environ.get("SANDSERVE_FUZZ_SEED", "20261207"))
DIRECT_CASES = int(os.environ.get("SANDSERVE_FUZZ_CASES", "3000"))
HTTP_CASES = max(1, DIRECT_CASES // 20)

V1_LOADS = {
    "timestamp": "2026-12-07T08:00:00Z",
    "version": "0.5.12",
    "dp_rank_count": 2,
    "loads": [
        {"dp_rank": 0, "num_running_reqs": 5, "num_waiting_reqs": 1, "num_used_tokens": 900,
         "max_total_num_tokens": 4096, "token_usage": 0.22, "cache_hit_rate": 0.5, "gen_throughput": 41.5},
        {"dp_rank": 1, "num_running_reqs": 3, "num_waiting_reqs": 0, "num_used_tokens": 100,
         "max_total_num_tokens": 4096, "token_usage": 0.02, "cache_hit_rate": 0.1, "gen_throughput": 20.0},
    ],
}  # fmt: skip
SLOTS = [
    {"id": 0, "n_ctx": 2048, "is_processing": True, "n_prompt_tokens": 12, "next_token": [{"n_decoded": 30}]},
    {"id": 1, "n_ctx": 2048, "is_processing": False},
]
WORKERS = {"workers": [{"url": "http://127.0.0.1:9001", "is_healthy": True, "load": 2, "model_id": "m"}]}
METRICS = (
    "# TYPE sglang:num_running_reqs gauge\n"
    'sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="0"} 5.0\n'
    'sglang:token_usage{model_name="m"} 0.25\n'
    "sglang:prompt_tokens_total 120\nsglang:generation_tokens_total 400\nsglang:cached_tokens_total 60\n"
    "llamacpp:requests_processing 2\nllamacpp:prompt_tokens_total 9\n"
    'smg_router_requests_total{route="/v1/chat/completions"} 12\n'
    'smg_http_responses_total{status_code="503"} 2\n'
    'smg_worker_requests_active{worker="http://127.0.0.1:9001/"} 1\n'
    'smg_worker_health{worker="http://127.0.0.1:9001"} 1\n'
)
CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"content": "Hi", "reasoning_content": None}, "finish_reason": None}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 0}},
}
SSE = b"".join(b"data: " + json.dumps(CHUNK).encode() + b"\n\n" for _ in range(3)) + b"data: [DONE]\n\n"

#: Values of every JSON type (and the non-finite numbers Python's json reads) put where another type was.
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 10**30, 1e308, float("inf"), float("-inf"), float("nan"),
    "", "x", "\udcff", [], [None], {}, {"a": None}, [1, "two", [3]], {"loads": 1},
]  # fmt: skip
#: Byte runs a proxy or a crash can put in a body: Latin-1, lone continuation bytes, a cut multi-byte
#: character, a NUL, an overlong encoding, a UTF-16 BOM.
BAD_BYTES = [b"\xe9t\xe9", b"\x80\x81", b"\xe2\x82", b"\x00", b"\xc0\xaf", b"\xff\xfe", b"\xed\xa0\x80"]


def swapped(value: Any, rng: random.Random) -> Any:
    """``value`` with one node somewhere inside replaced by a value of another type."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        return {**value, key: swapped(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = rng.randrange(len(value))
        return [*value[:index], swapped(value[index], rng), *value[index + 1 :]]
    return rng.choice(ODD_VALUES)


def mutated(seed: bytes, rng: random.Random, shape: Any = None) -> bytes:
    """One body derived from ``seed`` (or from the JSON ``shape``) by one of the mutations."""
    kind = rng.randrange(8)
    if kind == 0:
        return seed[: rng.randrange(len(seed) + 1)]  # cut mid-write
    if kind == 1:
        body = bytearray(seed)
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        return bytes(body)
    if kind == 2:
        at = rng.randrange(len(seed) + 1)
        return seed[:at] + rng.choice(BAD_BYTES) + seed[at:]
    if kind == 3:
        return rng.randbytes(rng.randrange(300))
    if kind == 4 and shape is not None:
        return json.dumps(swapped(shape, rng)).encode("utf-8", "surrogatepass")
    if kind == 5:
        return json.dumps(rng.choice(ODD_VALUES)).encode("utf-8", "surrogatepass")
    if kind == 6:
        return seed.decode("utf-8").encode(rng.choice(["latin-1", "utf-16", "cp1252"]), "replace")
    return b""


def sse_mutated(rng: random.Random) -> bytes:
    """A stream whose chunks are mutated one by one (and whose end may be cut)."""
    lines = []
    for _ in range(rng.randint(1, 4)):
        chunk = mutated(json.dumps(CHUNK).encode(), rng, CHUNK)
        lines.append(b"data: " + chunk.replace(b"\n", b" ") + b"\n\n")
    if rng.random() < 0.5:
        lines.append(b"data: [DONE]\n\n")
    body = b"".join(lines)
    return body[: rng.randrange(len(body) + 1)] if rng.random() < 0.2 else body


def cases(rng: random.Random, count: int) -> Iterator[tuple[bytes, bytes, bytes, bytes, bytes]]:
    """(loads, slots, metrics, workers, stream) bodies, one of each per case."""
    metrics = METRICS.encode()
    for _ in range(count):
        yield (
            mutated(json.dumps(V1_LOADS).encode(), rng, V1_LOADS),
            mutated(json.dumps(SLOTS).encode(), rng, SLOTS),
            mutated(metrics, rng),
            mutated(json.dumps(WORKERS).encode(), rng, WORKERS),
            sse_mutated(rng),
        )


def as_json(body: bytes) -> Any:
    """What a caller that decoded the body leniently hands the parsers (None where it is not JSON)."""
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None


def test_the_parsers_take_any_value() -> None:
    rng = random.Random(SEED)
    checked = 0
    for loads, slots, metrics, workers, stream in cases(rng, DIRECT_CASES):
        text = metrics.decode("utf-8", "replace")
        parsed, counters = parse_prometheus(parse_metrics(text))
        reading = EndpointLoad(endpoint_id="e", url="u", at=0.0, monotonic=0.0)
        merge(reading, [parse_v1_loads(as_json(loads)), parse_slots(as_json(slots)), parsed], counters)
        json.dumps(reading.to_dict())  # what `top --json` prints
        parse_gateway_metrics(workers.decode("utf-8", "replace"))
        for line in stream.splitlines(keepends=True):
            assert isinstance(_rewrite_sse_line(line, sglang_shapes), bytes)
        checked += 1
    assert checked == DIRECT_CASES, f"seed {SEED}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Bodies:
    """The server's next answers: one body per route."""

    def __init__(self) -> None:
        self.by_route: dict[str, bytes] = {}

    def handler(self, route: str, content_type: str) -> Callable[[web.Request], Any]:
        async def answer(request: web.Request) -> web.Response:
            return web.Response(body=self.by_route.get(route, b""), headers={"Content-Type": content_type})

        return answer


async def _fuzz_over_http(count: int) -> int:
    rng = random.Random(SEED + 1)
    bodies = Bodies()
    app = web.Application()
    json_type = "application/json; charset=utf-8"
    app.router.add_get("/v1/loads", bodies.handler("loads", json_type))
    app.router.add_get("/slots", bodies.handler("slots", json_type))
    app.router.add_get("/metrics", bodies.handler("metrics", "text/plain; version=0.0.4; charset=utf-8"))
    app.router.add_get("/workers", bodies.handler("workers", json_type))
    app.router.add_post("/v1/chat/completions", bodies.handler("stream", "text/event-stream"))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    endpoint = Endpoint(id="fuzz", url=url, model="m", engine="sglang")
    checked = 0
    try:
        async with LoadProbe(timeout=10) as probe, aiohttp.ClientSession() as session:
            stream_session = bench_session(endpoint)
            try:
                for loads, slots, metrics, workers, stream in cases(rng, count):
                    bodies.by_route = dict(
                        loads=loads, slots=slots, metrics=metrics, workers=workers, stream=stream
                    )
                    probe._absent.clear()
                    reading = await probe.read(endpoint)
                    assert reading.ok or reading.error, reading
                    json.dumps(reading.to_dict())
                    listed, why = await gateway_workers(session, endpoint)
                    assert (listed is None) == (why is not None)
                    await gateway_metrics(session, url + "/metrics")
                    record = RequestRecord(index=0, sent_at=0.0)
                    await stream_chat(stream_session, url + "/v1/chat/completions", b"{}", record)
                    assert record.ok or record.error, record
                    checked += 1
            finally:
                await stream_session.close()
    finally:
        await runner.cleanup()
    return checked


def test_the_readers_survive_any_body_over_http() -> None:
    assert asyncio.run(_fuzz_over_http(HTTP_CASES)) == HTTP_CASES, f"seed {SEED}"


async def _one_reading(body: bytes, route: str) -> EndpointLoad:
    bodies = Bodies()
    bodies.by_route = {route: body}
    app = web.Application()
    app.router.add_get("/" + route, bodies.handler(route, "text/plain; charset=utf-8"))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        endpoint = Endpoint(id="e", url=f"http://127.0.0.1:{port}", model="m", engine="sglang")
        async with LoadProbe(timeout=10) as probe:
            return await probe.read(endpoint)
    finally:
        await runner.cleanup()


def test_a_body_that_is_not_utf8_is_a_failed_reading_that_says_so() -> None:
    reading = asyncio.run(_one_reading(b"sglang:num_running_reqs 5\n# caf\xe9\n", "metrics"))
    assert not reading.ok
    assert reading.error is not None and "not UTF-8" in reading.error and "/metrics" in reading.error
