"""Requests into llama-server's slots through the admission queue, and low-priority ones preempted for people.

A low-priority chat request asked for whole (the batch runner's and classify's) may be preempted: when a
person's request comes while it runs, its request to llama-server is dropped (llama-server cancels a
streamed request when its connection closes: chat_collect.py says why it is sent as a stream), it goes back
to the queue in its old place, and it is sent again when a slot is its again: llama-server's prompt cache
(its slot keeps the prompt; the slot chosen is the one whose cached tokens share the most with the prompt)
makes the prompt's second pass cheap. Its client has seen nothing by then, and sees one answer in the end:
the batch runner counts no retry.

A streamed request, or any other route, is never preempted: its client may already have part of the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandserve.engines.admission import AdmissionQueue, Ticket
from sandserve.engines.chat_collect import can_collect
from sandserve.engines.first_tokens import FirstTokenTimer
from sandserve.engines.priority import DEFAULT_VALUE, value_of
from sandserve.engines.prompt_feed import PromptFeed

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
#: The routes whose requests may be preempted (the adapter's chat route streams them from llama-server).
PREEMPTIBLE_ROUTES = frozenset({"/v1/chat/completions"})
#: Set on a request the adapter's chat route is to fetch as a stream and answer whole.
COLLECT = web.RequestKey("sandserve_collect", bool)
#: The llama-server slot the adapter's chat route is to ask for (``id_slot``): AdmissionQueue.pin.
SLOT = web.RequestKey("sandserve_slot", int)
#: Called when a streamed answer's first token is written back (first_tokens.py).
FIRST_TOKEN = web.RequestKey("sandserve_first_token", FirstTokenTimer)


def preemptible(path: str, priority: int, body: Any) -> bool:
    return priority < DEFAULT_VALUE and path in PREEMPTIBLE_ROUTES and can_collect(body)


async def until_done_or_preempted(
    ticket: Ticket, work: Awaitable[web.StreamResponse]
) -> web.StreamResponse | None:
    """The handler's answer, or None when the ticket was preempted first (the handler is then cancelled,
    which closes its connection to llama-server)."""
    task = asyncio.ensure_future(work)
    preempted = asyncio.ensure_future(ticket.preempted.wait())
    try:
        await asyncio.wait({task, preempted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        preempted.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()


def admission_middleware(queue: AdmissionQueue, feed: PromptFeed | None = None) -> Any:
    """An aiohttp middleware: a POST to a generation route waits in ``queue`` for its slot, held until the
    answer (a stream included) has been written; a preemptible one is sent again until it is answered. A
    request on a route that cannot be pinned to a slot may land in any free one: ``feed`` then forgets what
    it fed into the slots no admitted request holds."""

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
        ticket = queue.ticket(priority, preemptible=preemptible(request.path, priority, body))
        request[COLLECT] = ticket.preemptible
        request[FIRST_TOKEN] = queue.first_tokens.timer(priority)
        while True:
            async with queue.admitted(ticket):
                if request.path in PREEMPTIBLE_ROUTES and isinstance(body, dict):
                    request[SLOT] = queue.pin(ticket)
                elif feed is not None:
                    feed.free_slot_taken()
                if not ticket.preemptible:
                    return await handler(request)
                answer = await until_done_or_preempted(ticket, handler(request))
            if answer is not None:
                return answer
            queue.preemptions += 1

    return middleware
