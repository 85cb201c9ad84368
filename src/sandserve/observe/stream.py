"""One streamed chat completion over aiohttp, recorded as timestamps: the benchmark's client.

Lean on purpose (one aiohttp session, SSE lines parsed as they arrive, one ``json.loads`` per chunk), so
that the client is never what a benchmark measures: ``sandserve bench --client-ceiling`` shows its limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from sandserve.client.transport import error_for_status, server_message, utf8_text
from sandserve.client.usage import usage_of
from sandserve.endpoint import Endpoint
from sandserve.observe.metrics import RequestRecord


def bench_session(endpoint: Endpoint, *, timeout_s: float = 600.0) -> aiohttp.ClientSession:
    """A session for many requests at once: no connection limit (the benchmark bounds concurrency itself)."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    headers = {**endpoint.request_headers(), "Content-Type": "application/json"}
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=30),
        skip_auto_headers=("User-Agent",),
    )


def chat_body(model: str, messages: list[dict[str, Any]], max_tokens: int, extra: dict[str, Any]) -> bytes:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    return json.dumps(body).encode()


def _text_in(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(
            delta.get(k) for k in ("content", "reasoning_content", "tool_calls")
        ):
            return True
    return False


def _read_usage(record: RequestRecord, usage: dict[str, Any]) -> None:
    counts = usage_of(usage)  # SGLang's null prompt_tokens_details (no cache hit) counts as 0
    record.prompt_tokens = counts.prompt_tokens
    record.completion_tokens = counts.completion_tokens
    record.cached_tokens = counts.cached_tokens


#: Failures of a pooled keep-alive connection the server had already closed: the request never reached it.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
#: Failures of the connection itself (refused, reset, cut mid-answer), which a server that died also causes.
_CONNECTION_LOST = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)


#: Reads one parsed SSE ``data:`` payload into the record (text timestamps, usage), given its arrival time.
ChunkReader = Callable[[dict[str, Any], RequestRecord, float], None]


def read_chat_chunk(chunk: dict[str, Any], record: RequestRecord, now: float) -> None:
    if _text_in(chunk):
        record.chunk_times.append(now)
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage:
        _read_usage(record, usage)


async def stream_chat(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    record: RequestRecord,
    read: ChunkReader = read_chat_chunk,
) -> None:
    """POST ``body`` to ``url`` and fill ``record`` as the stream arrives; never raises for a server's error
    (the record says ``ok=False`` and why). ``record.sent_at`` is set here, just before the request goes.

    A request whose pooled connection turns out closed before any answer arrives is sent once more on a
    new connection (counted in ``record.resent``; its clock restarts): the server never saw it."""
    for attempt in range(2):
        answered = await _attempt(session, url, body, record, read)
        if answered or attempt:
            return
        record.resent += 1
        record.error = None
        record.connection_lost = False


async def _attempt(
    session: aiohttp.ClientSession, url: str, body: bytes, record: RequestRecord, read: ChunkReader
) -> bool:
    """One try; False only when it failed on a stale connection before any answer."""
    clock = time.perf_counter
    record.sent_at = clock()
    answered = False
    try:
        async with session.post(url, data=body) as response:
            answered = True
            if response.status != 200:
                raw = await response.read()
                record.error = error_for_status(url, response.status, server_message(raw)).message
                record.done_at = clock()
                return True
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                now = clock()
                chunk = json.loads(utf8_text(payload, "the stream"))
                if not isinstance(chunk, dict):
                    record.error = f"the stream carried something that is not a chunk: {payload[:80]!r}"
                    record.done_at = now
                    return True
                if "error" in chunk:
                    record.error = server_message(chunk, "error chunk in the stream")
                    record.done_at = now
                    return True
                read(chunk, record, now)
        record.done_at = clock()
        if record.completion_tokens is None:
            record.error = "the stream ended without a usage report (the server ignored stream_options)"
        elif not record.chunk_times:
            record.error = "the stream carried no text"
        else:
            record.ok = True
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        record.done_at = clock()
        record.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        record.connection_lost = isinstance(exc, _CONNECTION_LOST)
        if not answered and isinstance(exc, _STALE_CONNECTION):
            return False
    return True
