"""What the adapter feeds of a batch prompt before the request (the feeding itself runs against llama-server
in tests/integration/test_priority.py)."""

from __future__ import annotations

import pytest

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
