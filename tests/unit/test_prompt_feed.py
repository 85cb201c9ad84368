"""What the adapter feeds of a batch prompt before the request (the feeding itself runs against llama-server
in tests/integration/test_priority.py)."""

from __future__ import annotations

import pytest

from sandserve.engines.prompt_feed import PromptFeed, feed_ends, shared_prefix, text_only


@pytest.mark.parametrize(
    ("tokens", "ends"),
    [(0, []), (1, []), (8, []), (9, [8]), (16, [8]), (17, [8, 16]), (30, [8, 16, 24])],
)
def test_the_request_itself_reads_at_least_the_last_token(tokens, ends):
    assert feed_ends(tokens, 8) == ends


def test_a_request_sent_again_is_fed_only_past_what_its_slot_holds():
    assert feed_ends(30, 8, cached=16) == [24]
    assert feed_ends(30, 8, cached=12) == [16, 24]
    assert feed_ends(30, 8, cached=29) == []
    assert shared_prefix([1, 2, 3, 4], [1, 2, 9]) == 2 and shared_prefix([], [1]) == 0


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
