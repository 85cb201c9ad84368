"""What the adapter feeds of a batch prompt before the request (the feeding itself runs against llama-server
in tests/integration/test_priority.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from served_app import served

from sandserve.engines.prompt_feed import (
    ALONE_FEED_TOKENS,
    FEED_TOKENS,
    PromptFeed,
    next_end,
    text_only,
)


@pytest.mark.parametrize(
    ("fed", "tokens", "step", "end"),
    [
        (0, 30, 8, 8),
        (16, 30, 8, 24),
        (24, 30, 8, None),
        (0, 8, 8, None),
        (0, 0, 8, None),
        (12, 300, 128, 140),
    ],
)
def test_the_request_itself_reads_at_least_the_last_token(fed, tokens, step, end):
    assert next_end(fed, tokens, step) == end


def test_short_steps_while_people_are_present_long_ones_while_they_are_not():
    people = [True]
    feed = PromptFeed(lambda: people[0])
    assert feed.step() == FEED_TOKENS
    people[0] = False
    assert feed.step() == ALONE_FEED_TOKENS


@pytest.mark.parametrize(
    ("messages", "fed"),
    [
        ([{"role": "user", "content": "Classify this."}], True),
        (
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            True,
        ),
        ([{"role": "assistant", "content": None, "tool_calls": []}, {"role": "user", "content": "go"}], True),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}], False),
        ([], False),
        ("not a list", False),
    ],
)
def test_only_text_prompts_are_fed(messages, fed):
    assert text_only({"messages": messages}) is fed


def test_the_tokens_feed_requests_sampled_are_not_counted_as_generated():
    metrics = (
        "# TYPE llamacpp:tokens_predicted_total counter\n"
        "llamacpp:tokens_predicted_total 120\n"
        "llamacpp:prompt_tokens_total 900\n"
    )
    shown = PromptFeed().uncounted(metrics, 20)
    assert "llamacpp:tokens_predicted_total 100\n" in shown and "llamacpp:prompt_tokens_total 900" in shown
    assert PromptFeed().uncounted(metrics, 0) == metrics


def test_what_was_fed_is_forgotten_where_a_request_took_any_free_slot():
    """A request llama-server places itself (a route that cannot be pinned) may overwrite any free slot: a
    batch request sent again there is fed from its start; slots pinned to running requests keep theirs."""

    async def scenario() -> list[list[int]]:
        reads: list[int] = []

        async def apply_template(request: web.Request) -> web.Response:
            return web.json_response({"prompt": "a rendered prompt"})

        async def tokenize(request: web.Request) -> web.Response:
            return web.json_response({"tokens": list(range(40))})

        async def completion(request: web.Request) -> web.Response:
            body = await request.json()
            assert body["n_predict"] == 0 and body["cache_prompt"] is True
            reads.append(len(body["prompt"]))
            return web.json_response({"content": "", "tokens_predicted": 1})

        app = web.Application()
        app.router.add_post("/apply-template", apply_template)
        app.router.add_post("/tokenize", tokenize)
        app.router.add_post("/completion", completion)
        feed = PromptFeed(lambda: True, lambda: frozenset({3}))
        body = {"messages": [{"role": "user", "content": "Classify this."}]}
        seen = []
        async with served(app) as url, aiohttp.ClientSession() as session:
            for slot in (1, 3, 1):  # slot 1 sent again: nothing left to feed
                await feed.feed(session, url, {}, body, slot)
                seen.append(reads[:])
                reads.clear()
            feed.free_slot_taken()
            for slot in (1, 3):
                await feed.feed(session, url, {}, body, slot)
                seen.append(reads[:])
                reads.clear()
        return seen

    steps = [FEED_TOKENS * n for n in range(1, 40) if FEED_TOKENS * n < 40]
    assert asyncio.run(scenario()) == [steps, steps, [], steps, []]
