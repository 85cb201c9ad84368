"""The load sources against real servers: llama-server (real), the SGLang stand-in, and a recording server
that shows what every probe sends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web
from standins.sglang_server import SGLangStandin

from sandserve.endpoint import Endpoint
from sandserve.observe.loads import LoadProbe, rates, read_loads
from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER, SKIP_ACTIVITY_HEADER
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry
from sandserve.serve.resolve import resolve_spec

MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture
def keyed_local_endpoint(llama_server, tiny_model) -> Iterator[Endpoint]:
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local", api_key="sk-loads-test"))
    yield endpoint
    registry = Registry()
    lifecycle.down(registry.get(endpoint.id), registry)


def chat(endpoint: Endpoint, max_tokens: int = 8) -> dict:
    body = {"model": endpoint.model, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0}
    response = httpx.post(
        endpoint.base_url + "/chat/completions", json=body, headers=endpoint.request_headers(), timeout=120
    )
    response.raise_for_status()
    return response.json()


def test_llama_server_load_counts_and_rates(keyed_local_endpoint):
    endpoint = keyed_local_endpoint
    [before] = read_loads([endpoint])
    assert before.ok, before.error
    assert before.sources == ("/slots", "/metrics")  # llama.cpp has no /v1/loads
    assert before.running == 0 and before.queued == 0
    assert before.capacity_tokens and before.capacity_tokens > 0
    usage = chat(endpoint)["usage"]
    [after] = read_loads([endpoint])
    r = rates(before, after)
    assert after.counters.generation_tokens - before.counters.generation_tokens == usage["completion_tokens"]
    assert after.counters.prompt_tokens - before.counters.prompt_tokens == usage["prompt_tokens"]
    assert r.generation_tokens_per_s and r.generation_tokens_per_s > 0


def test_llama_server_shows_requests_in_flight(keyed_local_endpoint):
    """A reading taken while three long generations run shows them. The tiny model writes 3,000 tokens in
    seconds on 2 cores (SmolLM2 took minutes), and the requests are dropped as soon as a reading saw them."""
    endpoint = keyed_local_endpoint
    body = {
        "model": endpoint.model,
        "messages": MESSAGES,
        "max_tokens": 3000,
        "temperature": 1.0,
        "ignore_eos": True,
    }

    async def watch() -> int:
        async with (
            httpx.AsyncClient(timeout=300, headers=endpoint.request_headers()) as client,
            LoadProbe() as probe,
        ):
            url = endpoint.base_url + "/chat/completions"
            requests = [asyncio.ensure_future(client.post(url, json=body)) for _ in range(3)]
            busiest = 0
            try:
                while busiest == 0 and not all(r.done() for r in requests):
                    load = await probe.read(endpoint)
                    assert load.ok, load.error
                    busiest = max(busiest, (load.running or 0) + (load.queued or 0))
                    await asyncio.sleep(0.02)
            finally:
                for request in requests:
                    request.cancel()
                await asyncio.gather(*requests, return_exceptions=True)
            return busiest

    assert asyncio.run(watch()) > 0


def test_token_rates_move_while_a_long_request_runs(keyed_local_endpoint):
    """llama.cpp adds a request's tokens to its counter only when the request ends: the reading adds the
    running ones' tokens so far, so `top` shows tokens/s while a long answer streams, not 0 until it ends."""
    endpoint = keyed_local_endpoint
    body = {"model": endpoint.model, "messages": MESSAGES, "max_tokens": 3000, "ignore_eos": True}

    async def two_readings_while_it_runs() -> tuple[float | None, int | None]:
        async with httpx.AsyncClient(timeout=300) as client, LoadProbe() as probe:
            before = (await probe.read(endpoint)).counters.generation_tokens or 0.0
            request = asyncio.ensure_future(
                client.post(
                    endpoint.base_url + "/chat/completions", json=body, headers=endpoint.request_headers()
                )
            )
            try:
                first = await probe.read(endpoint)
                for _ in range(
                    1200
                ):  # until it has generated a token (at most a minute; the prompt comes first)
                    if first.running and (first.counters.generation_tokens or 0.0) > before:
                        break
                    await asyncio.sleep(0.05)
                    first = await probe.read(endpoint)
                await asyncio.sleep(0.5)
                second = await probe.read(endpoint)
                assert not request.done(), "the request ended before the second reading: make it longer"
                return rates(first, second).generation_tokens_per_s, second.running
            finally:
                request.cancel()

    per_second, running = asyncio.run(two_readings_while_it_runs())
    assert running == 1 and per_second is not None and per_second > 0


def test_a_wrong_key_gives_a_failed_reading_that_says_why(keyed_local_endpoint):
    wrong = Endpoint.from_dict({**keyed_local_endpoint.to_dict(), "api_key": "sk-wrong"})
    [load] = read_loads([wrong])
    assert not load.ok and load.running is None
    assert "refused the credentials" in (load.error or "")


def test_nothing_listening_gives_a_failed_reading():
    [load] = read_loads([Endpoint(id="gone", url="http://127.0.0.1:9", model="m")], timeout=2)
    assert not load.ok and "no answer" in (load.error or "")


def test_sglang_loads_through_v1_loads_with_a_key():
    with SGLangStandin(api_key="sk-sgl", enable_metrics=True, enable_cache_report=True) as server:
        endpoint = Endpoint(id="sgl", url=server.url, model="gpt-oss-20b", api_key="sk-sgl")
        [before] = read_loads([endpoint])
        assert before.ok, before.error
        assert before.sources == ("/v1/loads", "/metrics")
        assert before.capacity_tokens == server.config.max_total_num_tokens
        for _ in range(2):
            chat(endpoint)
        [after] = read_loads([endpoint])
        assert after.counters.requests - before.counters.requests == 2
        assert after.cache_hit_rate is not None and after.cache_hit_rate > 0  # the same prompt twice
        [refused] = read_loads([Endpoint(id="sgl", url=server.url, model="m", api_key="sk-bad")])
        # SGLang's /metrics stays open under --api-key (as /health does): a wrong key still reads it, and the
        # reading says what was refused.
        assert refused.sources == ("/metrics",) and "refused the credentials" in (refused.error or "")


class RecordingServer:
    """Answers /metrics like llama.cpp and records every request's headers."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        self.paths.append(request.path)
        if request.path == "/metrics":
            return web.Response(text="llamacpp:requests_processing 1\nllamacpp:requests_deferred 4\n")
        return web.Response(status=404)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_every_probe_carries_the_auth_and_the_skip_activity_header():
    with RecordingServer() as server:
        # Headers as the Daytona provider gives its endpoints (the probe headers are the provider's).
        endpoint = Endpoint(
            id="rec",
            url=server.url,
            model="m",
            headers={PREVIEW_TOKEN_HEADER: "tok"},
            api_key="k",
            token_header=PREVIEW_TOKEN_HEADER,
            probe_headers=DaytonaProvider.probe_headers,
        )

        async def twice() -> list:
            async with LoadProbe() as probe:
                return [await probe.read(endpoint), await probe.read(endpoint)]

        first, _second = asyncio.run(twice())
    assert (first.running, first.queued) == (1, 4)
    assert server.headers, "no probe arrived"
    for headers in server.headers:
        assert headers.get(SKIP_ACTIVITY_HEADER) == "true"
        assert headers.get(PREVIEW_TOKEN_HEADER) == "tok"
        assert headers.get("Authorization") == "Bearer k"
    # The routes that answered 404 the first time are not asked again.
    assert server.paths.count("/v1/loads") == 1 and server.paths.count("/metrics") == 2
