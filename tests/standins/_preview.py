"""Forwarding for the stand-in's preview proxy: a request to 127.0.0.1:<port>, its answer streamed back."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

PREVIEW_TOKEN_HEADER = "x-daytona-preview-token"

# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones aiohttp recomputes for the new connection.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def new_client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        auto_decompress=False,  # bytes pass through with their Content-Encoding untouched
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    )


async def forward(
    session: aiohttp.ClientSession, request: web.Request, port: int, target: str
) -> web.StreamResponse:
    """Send `request` to http://127.0.0.1:{port}{target} (raw path + query); stream the answer back."""
    headers = [
        (name, value)
        for name, value in request.headers.items()
        if name.lower() not in _NOT_FORWARDED and name.lower() != PREVIEW_TOKEN_HEADER
    ]
    body = await request.read()
    try:
        upstream = await session.request(
            request.method,
            URL(f"http://127.0.0.1:{port}{target}", encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        )
    except aiohttp.ClientConnectionError as e:
        return web.Response(status=502, text=f"Bad Gateway: nothing answers on sandbox port {port} ({e})\n")
    except aiohttp.ClientError as e:
        return web.Response(status=502, text=f"Bad Gateway: invalid answer from sandbox port {port} ({e})\n")

    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _NOT_FORWARDED:
                response.headers.add(name, value)
        if upstream.content_length is not None and request.method != "HEAD":
            response.content_length = upstream.content_length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():  # chunk by chunk: SSE must not be buffered
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientPayloadError):
            pass  # one side went away mid-stream; nothing sensible left to send
        return response
