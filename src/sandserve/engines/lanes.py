"""Which of the adapter's llama-servers answers a generation request, and its wait for a slot there.

A request's priority (priority.py) chooses: low-priority requests (batch work) go to the batch's llama-server
(batch_server.py), started on the first of them; every other request goes to the people's. Each server has
its admission queue (admission.py). The waits of streamed requests for their first token are timed by
priority (first_tokens.py) for ``/metrics``, where the batch runner reads them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandserve.engines.admission import AdmissionQueue, with_queued
from sandserve.engines.batch_server import BatchServer
from sandserve.engines.first_tokens import FirstTokenTimer, FirstTokenTimes
from sandserve.engines.priority import DEFAULT_VALUE, value_of
from sandserve.engines.upstream import Upstream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Routes whose requests take a llama-server slot.
GENERATION_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/completion",
        "/generate",
        "/infill",
        "/v1/responses",
        "/v1/messages",
    }
)
#: The llama-server a request is sent to, when it is not the people's.
UPSTREAM = web.RequestKey("sandserve_upstream", Upstream)
#: Called when a streamed answer's first token is written back (first_tokens.py).
FIRST_TOKEN = web.RequestKey("sandserve_first_token", FirstTokenTimer)


class Lanes:
    """The people's llama-server (``slots`` of them) and, where there is one, the batch's."""

    def __init__(self, slots: int, batch_server: BatchServer | None = None) -> None:
        self.people = AdmissionQueue(slots)
        self.batch = AdmissionQueue(slots)
        self.batch_server = batch_server
        self.first_tokens = FirstTokenTimes()

    async def lane_for(self, priority: int) -> tuple[AdmissionQueue, Upstream | None]:
        """The queue a request waits in, and the server it goes to (None: the people's)."""
        if priority < DEFAULT_VALUE and self.batch_server is not None:
            upstream = await self.batch_server.upstream()
            if upstream is not None:
                return self.batch, upstream
        return self.people, None

    def endpoint_metrics(self, servers_metrics: str) -> str:
        """The llama-servers' /metrics with the requests waiting here counted as deferred, then the queues'
        gauges and the first-token waits."""
        return with_queued(servers_metrics, (self.people, self.batch)) + self.first_tokens.metrics_text()


def lanes_middleware(lanes: Lanes) -> Any:
    """An aiohttp middleware: a POST to a generation route goes to its priority's llama-server and waits
    there for a slot, held until the answer (a stream included) has been written."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in GENERATION_ROUTES:
            return await handler(request)
        raw = await request.read()  # aiohttp keeps it: the route reads the same bytes
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        priority = value_of(body, request.headers)
        request[FIRST_TOKEN] = lanes.first_tokens.timer(priority)
        queue, upstream = await lanes.lane_for(priority)
        if upstream is not None:
            request[UPSTREAM] = upstream
        async with queue.admitted(priority):
            return await handler(request)

    return middleware
