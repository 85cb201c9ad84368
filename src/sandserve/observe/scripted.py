"""A scripted OpenAI-compatible streaming server: the first token after ``first_token_ms``, then one token
every ``token_ms``, ``max_tokens`` tokens, a usage chunk, ``[DONE]``. With both delays 0 it is the instant
server the client's ceiling is measured against; with delays it is the server whose metrics are known.

It answers ``/metrics`` in llama.cpp's dialect (``requests_processing``, ``requests_deferred`` and token
counters) with ``slots`` requests served at once and the rest waiting, so a benchmark's load join can be
checked against it too. Run it in a thread (``ScriptedServer``) or as a process:
``python -m sandserve.observe.scripted --port P [--first-token-ms X --token-ms Y --slots N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from sandserve.engines import engine_class

MODEL = "scripted"
#: The metric names it answers with: llama.cpp's own, as its engine names them.
LLAMACPP_METRICS = engine_class("llamacpp").metric_names
PROMPT_TOKENS = 7


@dataclass
class Script:
    first_token_ms: float = 0.0
    token_ms: float = 0.0
    slots: int = 0
    """Requests generated at once (0: no limit); the others wait, as ``requests_deferred``."""


def _chunk(text: str, index: int) -> bytes:
    data = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _usage(completion: int) -> bytes:
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    }
    data = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [],
        "usage": usage,
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class _State:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.processing = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generated = 0
        self.gate = asyncio.Semaphore(script.slots) if script.slots else None


def build_app(script: Script) -> web.Application:
    state = _State(script)
    token = _chunk(" tok", 0)
    instant_cache: dict[int, bytes] = {}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        if state.gate is not None:
            state.waiting += 1
            await state.gate.acquire()
            state.waiting -= 1
        state.processing += 1
        try:
            if not script.first_token_ms and not script.token_ms:
                payload = instant_cache.get(n)
                if payload is None:
                    payload = instant_cache[n] = token * n + _usage(n) + b"data: [DONE]\n\n"
                state.prompt_tokens += PROMPT_TOKENS
                state.generated += n
                return web.Response(body=payload, content_type="text/event-stream")
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await asyncio.sleep(script.first_token_ms / 1000)
            for i in range(n):
                if i:
                    await asyncio.sleep(script.token_ms / 1000)
                await response.write(token)
                state.generated += 1
            state.prompt_tokens += PROMPT_TOKENS
            await response.write(_usage(n) + b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            state.processing -= 1
            if state.gate is not None:
                state.gate.release()

    async def metrics(request: web.Request) -> web.Response:
        values = {
            "prompt_uncached": state.prompt_tokens,
            "cached": 0,
            "generated": state.generated,
            "running": state.processing,
            "queued": state.waiting,
        }
        lines = [f"{LLAMACPP_METRICS[field]} {value}" for field, value in values.items()]
        return web.Response(text="\n".join(lines) + "\n")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "scripted"}]}
        )

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app


class _InstantProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with one canned answer: the cheapest server that still streams a real SSE body,
    so that measuring the client's ceiling measures the client (an aiohttp server tops out first)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0].strip() or b"0")
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            assert self.transport is not None
            self.transport.write(self.answer)


def instant_answer(tokens: int) -> bytes:
    body = _chunk(" tok", 0) * tokens + _usage(tokens) + b"data: [DONE]\n\n"
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


async def serve_instant(sock: socket.socket, tokens: int) -> None:
    """Every request, whatever it asks, gets ``tokens`` streamed chunks and a usage chunk (no /metrics)."""
    answer = instant_answer(tokens)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _InstantProtocol(answer), sock=sock)
    async with server:
        await server.serve_forever()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    return sock


class ScriptedServer:
    """The scripted server on a free 127.0.0.1 port, in a background thread (``with ScriptedServer(...) as
    s``)."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self._sock = _listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="scripted-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(build_app(self.script), access_log=None)
        await runner.setup()
        await web.SockSite(runner, self._sock).start()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandserve.observe.scripted")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--token-ms", type=float, default=0.0)
    parser.add_argument("--slots", type=int, default=0)
    parser.add_argument(
        "--instant-tokens", type=int, help="Serve one canned answer of N tokens, as fast as possible."
    )
    args = parser.parse_args(argv)
    if args.instant_tokens:
        asyncio.run(serve_instant(_listen(args.host, args.port), args.instant_tokens))
        return
    script = Script(args.first_token_ms, args.token_ms, args.slots)
    web.run_app(build_app(script), sock=_listen(args.host, args.port), access_log=None, print=None)


if __name__ == "__main__":
    main()
