"""An aiohttp app served in the test's own process on a free local port, for the length of a block."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """Yield the app's base URL (``http://127.0.0.1:PORT``); cleaned up on the way out."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started: it listens
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
