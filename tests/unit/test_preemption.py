"""Preempting batch requests for people, on the admission queue alone; a streamed chat put back together."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from aiohttp import web
from served_app import served

from sandserve.engines.admission import MAX_PREEMPTIONS, AdmissionQueue, Ticket
from sandserve.engines.chat_collect import as_stream, can_collect, collect_chat
from sandserve.engines.preemption import SLOT, admission_middleware, preemptible, until_done_or_preempted
from sandserve.engines.prompt_feed import PromptFeed


async def _run(queue: AdmissionQueue, ticket: Ticket, log: list[str], name: str, done: asyncio.Event) -> None:
    """A request as the middleware runs a preemptible one: sent again after each preemption."""
    while True:
        async with queue.admitted(ticket):
            log.append(f"{name} start")
            answer = await until_done_or_preempted(ticket, _answer_when(done))
        if answer is not None:
            log.append(f"{name} done")
            return
        log.append(f"{name} preempted")
        queue.preemptions += 1


async def _answer_when(done: asyncio.Event) -> web.StreamResponse:
    await done.wait()
    return web.Response(text="ok")


async def _settle() -> None:
    for _ in range(50):  # every task ready to run gets there (no I/O here)
        await asyncio.sleep(0)


def test_a_person_preempts_the_running_batch_which_goes_back_ahead_of_the_later_batch():
    async def scenario() -> tuple[list[str], AdmissionQueue]:
        queue, log = AdmissionQueue(4), []
        done = {name: asyncio.Event() for name in ("b1", "b2", "b3", "b4", "person", "streamed")}
        tickets = {
            "b1": queue.ticket(-1, preemptible=True),
            "b2": queue.ticket(-1, preemptible=True),
            "streamed": queue.ticket(-1),  # its client may have part of the answer already: never preempted
            "b3": queue.ticket(-1, preemptible=True),
        }
        tasks = [asyncio.ensure_future(_run(queue, t, log, name, done[name])) for name, t in tickets.items()]
        await _settle()
        assert log == ["b1 start", "b2 start", "streamed start", "b3 start"]
        log.clear()
        # A later batch request waits: no person has been seen yet, so the batch holds all four slots.
        tasks.append(
            asyncio.ensure_future(_run(queue, queue.ticket(-1, preemptible=True), log, "b4", done["b4"]))
        )
        await _settle()
        assert log == [] and queue.waiting() == {-1: 1}
        person = asyncio.ensure_future(_run(queue, queue.ticket(0), log, "person", done["person"]))
        await _settle()
        # b1, b2, b3 are stopped, the person starts, and no batch request starts while the person is served.
        assert sorted(log) == ["b1 preempted", "b2 preempted", "b3 preempted", "person start"]
        assert queue.preemptions == 3 and queue.waiting() == {-1: 4}
        log.clear()
        done["person"].set()
        await person
        await _settle()
        # The preempted go back first, in their old order, ahead of b4 (one slot is kept for people now).
        assert log == ["person done", "b1 start", "b2 start"]
        for event in done.values():
            event.set()
        await asyncio.gather(*tasks)
        return log, queue

    log, queue = asyncio.run(scenario())
    assert sorted(entry for entry in log if entry.endswith("done")) == [
        f"{n} done" for n in ("b1", "b2", "b3", "b4", "person", "streamed")
    ]
    assert sum(queue.running.values()) == 0 and queue.waiting() == {}
    assert "sandserve:preemptions_total 3" in queue.metrics_text()


def test_a_request_that_finishes_as_it_is_preempted_keeps_its_answer():
    async def scenario() -> web.StreamResponse | None:
        queue = AdmissionQueue(2)
        ticket = queue.ticket(-1, preemptible=True)
        async with queue.admitted(ticket):
            ticket.preempted.set()
            answered: asyncio.Future[web.StreamResponse] = asyncio.get_running_loop().create_future()
            answered.set_result(web.Response(text="ok"))
            return await until_done_or_preempted(ticket, answered)

    assert asyncio.run(scenario()) is not None


def test_a_preempted_request_is_cancelled_not_left_running():
    async def scenario() -> tuple[web.StreamResponse | None, bool]:
        queue = AdmissionQueue(2)
        ticket = queue.ticket(-1, preemptible=True)
        cancelled = asyncio.Event()

        async def work() -> web.StreamResponse:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return web.Response()

        async with queue.admitted(ticket):
            asyncio.get_running_loop().call_later(0.01, ticket.preempted.set)
            answer = await until_done_or_preempted(ticket, work())
        return answer, cancelled.is_set()

    assert asyncio.run(scenario()) == (None, True)


def test_which_requests_may_be_preempted():
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert preemptible("/v1/chat/completions", -1, chat)
    assert not preemptible("/v1/chat/completions", 0, chat)  # a person's
    assert not preemptible("/v1/chat/completions", -1, {**chat, "stream": True})
    assert not preemptible("/v1/chat/completions", -1, {**chat, "n": 2})
    assert not preemptible("/v1/completions", -1, {"prompt": "hi"})
    assert not preemptible("/v1/chat/completions", -1, None)
    assert can_collect({**chat, "n": 1})
    sent = json.loads(as_stream({**chat, "max_tokens": 4}))
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 4


def _sse(*chunks: dict[str, Any]) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\n" for c in chunks] + [b"\n", b"data: [DONE]\n"]


async def _lines(lines: list[bytes]) -> Any:
    for line in lines:
        yield line


def _collect(lines: list[bytes]) -> tuple[int, dict[str, Any]]:
    return asyncio.run(collect_chat(_lines(lines)))


HEAD = {
    "id": "chatcmpl-1",
    "created": 7,
    "model": "m",
    "system_fingerprint": "b1",
    "object": "chat.completion.chunk",
}


def _chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
    return {"choices": [{"finish_reason": finish, "index": 0, "delta": delta, **more}], **HEAD}


def test_a_streamed_chat_is_put_back_together_as_llama_server_answers_it_whole():
    usage = {
        "completion_tokens": 3,
        "prompt_tokens": 5,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    status, answer = _collect(
        _sse(
            _chunk({"role": "assistant", "content": None}),
            _chunk({"reasoning_content": "think"}, logprobs={"content": [{"token": "a"}]}),
            _chunk({"content": "Hel"}, logprobs={"content": [{"token": "b"}]}),
            _chunk({"content": "lo"}),
            _chunk(
                {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "get"}}]}
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
            _chunk({}, "tool_calls"),
            {"choices": [], **HEAD, "usage": usage, "timings": {"predicted_n": 3}},
        )
    )
    assert status == 200
    assert answer == {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "reasoning_content": "think",
                    "tool_calls": [
                        {"type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}, "id": "c1"}
                    ],
                },
                "logprobs": {"content": [{"token": "a"}, {"token": "b"}]},
            }
        ],
        "created": 7,
        "model": "m",
        "system_fingerprint": "b1",
        "object": "chat.completion",
        "usage": usage,
        "id": "chatcmpl-1",
        "timings": {"predicted_n": 3},
    }


def test_an_empty_answer_has_empty_content_and_no_reasoning_as_llama_server_writes_it():
    status, answer = _collect(_sse(_chunk({"role": "assistant", "content": None}), _chunk({}, "length")))
    assert status == 200
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert answer["choices"][0]["finish_reason"] == "length" and "logprobs" not in answer["choices"][0]


def test_an_error_in_the_stream_is_answered_with_its_status_and_a_cut_stream_is_a_502():
    error = {"code": 500, "message": "boom", "type": "server_error"}
    assert _collect(_sse(_chunk({"content": "a"}), {"error": error})) == (500, {"error": error})
    status, answer = _collect([b"data: " + json.dumps(_chunk({"content": "a"})).encode() + b"\n"])
    assert status == 502 and "ended before" in answer["error"]["message"]


def test_people_get_the_first_free_slot_and_a_batch_request_its_own_back():
    async def scenario() -> list[int]:
        queue = AdmissionQueue(4)
        got = []
        batch = [queue.ticket(-1, preemptible=True) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            for ticket in batch:
                await stack.enter_async_context(queue.admitted(ticket))
                got.append(queue.pin(ticket))  # the highest free: 3, 2, 1
            person = queue.ticket(0)
            async with queue.admitted(person):
                got.append(queue.pin(person))  # the lowest: 0
        # All gone; sent again, the batch request that had slot 2 gets it back, though lower ones are free.
        async with queue.admitted(batch[1]):
            got.append(queue.pin(batch[1]))
        return got

    assert asyncio.run(scenario()) == [3, 2, 1, 0, 2]


def test_a_request_preempted_as_often_as_allowed_runs_to_its_end():
    """People coming steadily cannot keep a batch request from finishing: after MAX_PREEMPTIONS preemptions it
    is left to run while the next person is served beside it."""

    async def scenario() -> list[str]:
        queue, log = AdmissionQueue(2), []
        batch_done = asyncio.Event()
        batch = asyncio.ensure_future(
            _run(queue, queue.ticket(-1, preemptible=True), log, "batch", batch_done)
        )
        await _settle()
        for n in range(MAX_PREEMPTIONS + 1):
            person_done = asyncio.Event()
            person = asyncio.ensure_future(_run(queue, queue.ticket(0), log, f"person{n}", person_done))
            await _settle()
            person_done.set()
            await person
            await _settle()
        batch_done.set()
        await batch
        return log

    log = asyncio.run(scenario())
    assert log.count("batch preempted") == MAX_PREEMPTIONS
    assert log[-3:] == [f"person{MAX_PREEMPTIONS} start", f"person{MAX_PREEMPTIONS} done", "batch done"]


def test_a_request_the_adapter_cannot_pin_to_a_slot_makes_the_feed_forget_the_free_slots():
    class Feed(PromptFeed):
        taken = 0

        def free_slot_taken(self) -> None:
            Feed.taken += 1

    async def scenario() -> tuple[int, int]:
        queue = AdmissionQueue(2)

        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"slot": request.get(SLOT)})

        app = web.Application(middlewares=[admission_middleware(queue, Feed())])
        app.router.add_post("/v1/completions", answer)
        app.router.add_post("/v1/chat/completions", answer)
        async with served(app) as url, aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat/completions", json={"messages": []}) as pinned:
                assert (await pinned.json())["slot"] == 0
            after_pinned = Feed.taken
            async with session.post(f"{url}/v1/completions", json={"prompt": "x"}) as placed:
                assert (await placed.json())["slot"] is None
        return after_pinned, Feed.taken

    assert asyncio.run(scenario()) == (0, 1)
