"""Priority end to end on real components: the adapter's admission queue in front of a real llama-server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from sandserve.endpoint import Endpoint
from sandserve.engines.priority import waiting_by_priority

#: Only against a hang (never a measured time): a wait that never ends fails the test instead.
HANG_GUARD_S = 120.0
PROMPT = [{"role": "user", "content": "Tell me a long story."}]


async def _stream(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    max_tokens: int,
    events: dict[str, float],
    name: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    body = {
        "model": endpoint.model,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "ignore_eos": True,  # every request generates exactly max_tokens: its slot is held as long as asked
        "stream": True,
        **(extra or {}),
    }
    async with session.post(f"{endpoint.base_url}/chat/completions", json=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        async for line in answer.content:
            if line.startswith(b"data: {") and f"{name} first" not in events:
                events[f"{name} first"] = time.monotonic()
        events[f"{name} done"] = time.monotonic()


async def _waiting(session: aiohttp.ClientSession, endpoint: Endpoint) -> dict[int, int]:
    async with session.get(f"{endpoint.url}/metrics") as answer:
        return waiting_by_priority(await answer.text()) or {}


async def _interactive_while_a_batch_fills_every_slot(endpoint: Endpoint, slots: int) -> dict[str, float]:
    events: dict[str, float] = {}
    async with aiohttp.ClientSession(headers=endpoint.request_headers()) as session:
        # The batch: one short request and slots - 1 long ones hold every slot; `slots` more wait behind them.
        # One as the body says (SGLang's integer), the other half as the gateway's header says.
        low_body = {"priority": -1}
        low_header = {"x-smg-priority": "bulk"}
        running = [
            _stream(session, endpoint, 64 if i == 0 else 1500, events, f"running{i}", low_body)
            for i in range(slots)
        ]
        queued = [
            _stream(session, endpoint, 16, events, f"queued{i}", None, low_header) for i in range(slots)
        ]
        tasks = [asyncio.ensure_future(c) for c in running]

        async def every_slot_busy() -> None:
            while sum(1 for key in events if key.endswith("first")) < slots:
                await asyncio.sleep(0.01)

        async def batch_waiting() -> None:
            while (await _waiting(session, endpoint)).get(-1, 0) < slots:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(every_slot_busy(), HANG_GUARD_S)
        tasks += [asyncio.ensure_future(c) for c in queued]
        await asyncio.wait_for(batch_waiting(), HANG_GUARD_S)
        # A person's request: no priority at all (normal).
        await _stream(session, endpoint, 8, events, "interactive")
        events["queued started by then"] = sum(1 for i in range(slots) if f"queued{i} first" in events)
        events["long done by then"] = sum(1 for i in range(1, slots) if f"running{i} done" in events)
        for task in tasks:  # the rest of the batch is not needed: closing its streams frees the slots
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return events


def test_an_interactive_request_starts_before_the_batch_requests_queued_ahead_of_it(local_endpoint: Endpoint):
    slots = int(local_endpoint.info.get("max_running_requests") or 0)
    assert slots >= 2, local_endpoint.info
    events = asyncio.run(_interactive_while_a_batch_fills_every_slot(local_endpoint, slots))
    # Sent last, it was answered before any batch request that was waiting when it came had started...
    assert events["queued started by then"] == 0
    # ... and it waited only for the first slot to free (the short batch request), not for the long ones.
    assert "running0 done" in events
    assert events["long done by then"] == 0
