"""A llama-server on a private port of 127.0.0.1, behind the adapter: started with a random key of its own
(so that its port serves no one else), and reached with it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Mapping

import aiohttp


class Upstream:
    """llama-server on its private port, with the private key every forwarded request carries."""

    def __init__(self, port: int, key: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            # A connection per request: llama-server's HTTP library (cpp-httplib) closes a kept-alive
            # connection after a few seconds idle or a few requests, and a request written into one it has
            # just closed fails ("Can not write request body"). A new local connection costs far less.
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,
            )
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_the_adapter() -> None:
    """In a llama-server's process before exec: SIGKILL when the adapter dies, however it dies (kill -9
    too), so that no llama-server is left an orphan."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


async def start_llama_server(
    command: list[str], key: str, env: Mapping[str, str], preexec: Callable[[], None]
) -> tuple[asyncio.subprocess.Process, Upstream]:
    """``command`` on a free private port, its key in its environment (never on its command line); its
    output goes where the adapter's goes."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *command,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env={**env, "LLAMA_API_KEY": key},
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=preexec,
    )
    return process, Upstream(port, key)


async def until_ready(
    process: asyncio.subprocess.Process, upstream: Upstream, timeout_s: float, poll_s: float = 0.1
) -> bool:
    """Wait until llama-server answers ``/v1/models`` with its key (it answers 503 while its model loads);
    False if it exits first or ``timeout_s`` passes. Not ``/health``: that answers anyone, so another
    llama-server that took the port first (two picked at once) would pass for this one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and process.returncode is None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with upstream.client().get(
                upstream.base + "/v1/models", headers=upstream.headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as answer:
                if answer.status == 200:
                    return True
        await asyncio.sleep(poll_s)
    return False
