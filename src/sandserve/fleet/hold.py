"""Holding requests while a fleet has no worker: a stand-in worker the gateway routes to at zero.

With ``--min 0`` the last worker goes after an idle delay. Neither gateway queues a request for a worker that
does not exist yet (both answer 503 at once), so before the last worker leaves, the autoscaler registers this
holder with the gateway as the fleet's only worker. A request routed to it is held (bounded count, bounded
time) and wakes the autoscaler; once a real worker serves, every held request is forwarded to it, its answer
streamed back, and the holder is deregistered. A client sees a slow first answer, never a refused connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from sandserve.fleet.members import new_key
from sandserve.providers.local import HOST, free_port

_FORWARDED_HEADERS = ("content-type", "accept")
#: How the holder says "no worker for this request" (held too long, too many held, workers refused). Not 503
#: or 429: both gateways retry 408/429/5xx on the same (only) worker and count each as a failure of its
#: circuit breaker, which then opens and refuses every request, held or not, for a while. 424 Failed
#: Dependency (the request depended on a worker boot that did not happen) is passed to the client as it is.
REFUSED = 424
_REPLY_HEADERS = ("content-type", "cache-control")


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str | None


class Holder:
    """The holding worker: an aiohttp server on 127.0.0.1 in a thread of its own."""

    def __init__(
        self,
        model: str,
        *,
        capacity: int,
        timeout: float,
        shared_key: str | None = None,
        sock: socket.socket | None = None,
        api_key: str | None = None,
    ) -> None:
        """``shared_key``: the fleet's key, which smg sends in place of the holder's own. ``sock`` and
        ``api_key``: a listening socket and a key kept by the autoscaler's supervisor, so that a restarted
        autoscaler's holder is the same worker to the gateway (same URL, same key)."""
        self.model = model
        self.capacity = capacity
        self.timeout = timeout
        self.api_key = api_key or new_key()
        self._accepted = {f"Bearer {key}" for key in (self.api_key, shared_key) if key}
        self._sock = sock
        self.port = int(sock.getsockname()[1]) if sock is not None else free_port()
        self.held = 0
        self.forwarded = 0
        self.timed_out = 0
        self.first_held_at: float | None = None
        """When the oldest request still waiting arrived (monotonic); None when none waits."""
        self.cold_starts: list[float] = []
        """Seconds from a request held at zero to a worker serving it, one per cold start."""
        self._target: Target | None = None
        self.refusing: str | None = None
        """Why requests are answered at once instead of held (the provider refuses workers for now)."""
        self._arrived = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._woken: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="holder", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def release(self, target: Target) -> None:
        """A worker serves: send every held request (and any that still arrives) to it."""
        self._loop.call_soon_threadsafe(self._set_target, target)

    def hold_again(self) -> None:
        """The fleet is back at zero: hold requests again."""
        self._loop.call_soon_threadsafe(self._set_target, None)

    def refuse(self, reason: str) -> None:
        """No worker can be started for a while: the requests held so far, and every one that arrives until
        ``accept``, are answered 503 with ``reason`` at once instead of waiting in vain."""
        self.refusing = reason
        self._loop.call_soon_threadsafe(self._wake)

    def accept(self) -> None:
        self.refusing = None
        self._loop.call_soon_threadsafe(self._set_target, self._target)

    def _wake(self) -> None:
        assert self._woken is not None
        self._woken.set()

    def wait_for_request(self, timeout: float) -> bool:
        """Block until a request arrives (or ``timeout``); the autoscaler wakes at once instead of polling."""
        fired = self._arrived.wait(timeout)
        self._arrived.clear()
        return fired

    def _set_target(self, target: Target | None) -> None:
        if target is not None and self._target is None and self.first_held_at is not None:
            self.cold_starts.append(round(time.monotonic() - self.first_held_at, 2))
        self._target = target
        assert self._woken is not None
        if target is None:
            self._woken.clear()
        else:
            self._woken.set()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._woken = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/{path:.*}", self._hold)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        if self._sock is not None:
            self._loop.run_until_complete(web.SockSite(runner, self._sock).start())
        else:
            self._loop.run_until_complete(web.TCPSite(runner, HOST, self.port).start())
        self._session = self._loop.run_until_complete(_new_session())
        self._started.set()
        self._loop.run_forever()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _hold(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") not in self._accepted:
            return _error(401, "Invalid API key.")
        body = await request.read()
        assert self._woken is not None
        if self._target is None:
            if self.refusing:
                return _error(
                    REFUSED, f"The fleet has no worker up and cannot start one now: {self.refusing}"
                )
            if self.held >= self.capacity:
                return _error(REFUSED, f"The fleet has no worker up and already holds {self.held} requests.")
            self.held += 1
            self.first_held_at = self.first_held_at or time.monotonic()
            self._arrived.set()
            try:
                await asyncio.wait_for(self._woken.wait(), self.timeout)
            except TimeoutError:
                self.timed_out += 1
                return _error(REFUSED, f"No worker came up within {self.timeout:.0f} s.")
            finally:
                self.held -= 1
                if self.held == 0:
                    self.first_held_at = None
        target = self._target
        if target is None:  # woken by a refusal
            return _error(REFUSED, f"The fleet has no worker up and cannot start one now: {self.refusing}")
        return await self._forward(request, body, target)

    async def _forward(self, request: web.Request, body: bytes, target: Target) -> web.StreamResponse:
        headers = {name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers}
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        async with self._session.post(target.url + request.path_qs, data=body, headers=headers) as upstream:
            reply = web.StreamResponse(
                status=upstream.status,
                headers={name: upstream.headers[name] for name in _REPLY_HEADERS if name in upstream.headers},
            )
            await reply.prepare(request)
            async for chunk in upstream.content.iter_any():
                await reply.write(chunk)
            await reply.write_eof()
        self.forwarded += 1
        return reply


async def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))


def holder_socket() -> socket.socket:
    """A listening socket for the holder on 127.0.0.1 (kept by the supervisor, handed to each autoscaler)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def refusal(message: str) -> web.Response:
    """How a request for a worker that will not come is answered (see ``REFUSED``)."""
    return _error(REFUSED, message)


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": {"message": message, "type": "fleet_at_zero", "code": status}}),
        content_type="application/json",
    )
