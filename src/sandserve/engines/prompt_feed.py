"""A batch request's prompt read into its llama-server slot a few tokens a step, before the request is sent.

llama-server reads up to its batch size of prompt tokens (``-b``, 2,048) in one step, a step cannot be
stopped once begun, and a new request gets a slot only between steps: on a CPU a person's request that came
while batch prompts were being read waited for all of them (a second and more for three 90-token prompts on 2
cores). Reading every prompt in short steps bounds that wait, but costs every prompt a third of its speed
(bench/bench_prompt_step.py), people's and lone requests' too.

So only the batch's prompts go in short steps, and only while people use the endpoint. Before a low-priority
chat request that may be preempted (preemption.py) is sent, its prompt is rendered by llama-server's own chat
template (``/apply-template``), tokenized as its chat route tokenizes it (``/tokenize`` with special tokens),
and read into the slot the request is pinned to by ``/completion`` requests of growing prefixes with
``n_predict: 0``, one at a time across every batch request: ``FEED_TOKENS`` more each while people are
present (a step then holds at most that many tokens of batch prompt), ``ALONE_FEED_TOKENS`` more while they
are not (near full speed: every step reads all of the model's weights, so short steps read a 3,000-token
passage at a fraction of the speed; the first person to come then waits for at most one such step).
The request itself then finds all but its last few tokens in the slot's cache. A preempted request's feed
stops with it (its handler is cancelled); what was read stays cached for its second try, unless another
request was given that slot meanwhile (a person's, pinned there, or one llama-server placed itself in any
free slot): it is then fed from its start.

Feeding only saves the request work: a prompt it cannot render as text (images, audio) is not fed, and any
failure leaves the rest of the prompt to the request, which then reports the error as llama-server words it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import aiohttp

#: Prompt tokens of batch requests read per step while people use the endpoint: the trade between a person's
#: first token and the batch's speed (bench/bench_priority.py on 2 cores, README's Batch section: 8 gave TTFT
#: p99 1.48x idle and the batch 0.79x alone, 16 1.64x-2.27x and 0.85x-0.86x, 32 2.48x and 0.87x).
FEED_TOKENS = 16
#: ... and while they do not: 0.97 of llama-server's full prompt speed on 2 cores, a step of about half a
#: second there (bench/bench_prompt_step.py).
ALONE_FEED_TOKENS = 128
#: llama-server's count of generated tokens: each feed request samples one token (``n_predict: 0`` still
#: samples the first), which no one asked for.
PREDICTED_METRIC = "llamacpp:tokens_predicted_total"


def next_end(fed: int, prompt_tokens: int, step: int) -> int | None:
    """The prefix length the next feed request reads, or None: the request itself reads what is left (at
    least one token: llama-server evaluates a prompt's last token again for its first output)."""
    end = fed + step
    return end if end < prompt_tokens else None


def text_only(body: dict[str, Any]) -> bool:
    """Every message is text, so the rendered prompt is the one the chat route tokenizes."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            if not all(isinstance(part, dict) and part.get("type") == "text" for part in content):
                return False
        elif content is not None and not isinstance(content, str):
            return False
    return True


class PromptFeed:
    """Feeds batch prompts into their slots, one step's worth at a time across all of them."""

    def __init__(
        self,
        people_present: Callable[[], bool] = lambda: True,
        pinned_slots: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self._people_present = people_present
        self._pinned_slots = pinned_slots
        self._turn = asyncio.Lock()
        self._fed: dict[int, list[int]] = {}
        """Per slot, the tokens fed into it last: a preempted request sent again to its slot is fed only
        what its earlier feed had not (each feed request re-reads at least one token)."""
        self.requests = 0
        """Feed requests answered since the adapter started."""

    def step(self) -> int:
        return FEED_TOKENS if self._people_present() else ALONE_FEED_TOKENS

    def forget(self, slot: int) -> None:
        """Another request was given ``slot``: what was fed there may be gone from its cache."""
        self._fed.pop(slot, None)

    def free_slot_taken(self) -> None:
        """A request went to whichever free slot llama-server chose: only the slots pinned to requests now
        are sure to keep what was fed into them."""
        pinned = self._pinned_slots()
        self._fed = {slot: tokens for slot, tokens in self._fed.items() if slot in pinned}

    async def feed(
        self,
        session: aiohttp.ClientSession,
        base: str,
        headers: dict[str, str],
        body: dict[str, Any],
        slot: int,
    ) -> None:
        if not text_only(body):
            return
        try:
            rendered = await _post(session, f"{base}/apply-template", headers, body)
            prompt = rendered.get("prompt")
            if not isinstance(prompt, str):
                return
            tokenized = await _post(
                session,
                f"{base}/tokenize",
                headers,
                {"content": prompt, "add_special": True, "parse_special": True},
            )
            tokens = tokenized.get("tokens")
            if not isinstance(tokens, list):
                return
            # commonprefix compares any sequences item by item: here token lists, not paths.
            fed = len(os.path.commonprefix([self._fed.get(slot, []), tokens]))  # noqa: RUF071
            self._fed[slot] = tokens[:fed]
            while (end := next_end(fed, len(tokens), self.step())) is not None:
                async with self._turn:
                    await _post(
                        session,
                        f"{base}/completion",
                        headers,
                        {"prompt": tokens[:end], "n_predict": 0, "id_slot": slot, "cache_prompt": True},
                    )
                self.requests += 1
                self._fed[slot] = tokens[:end]
                fed = end
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return

    def uncounted(self, metrics: str, requests: int) -> str:
        """llama-server's /metrics less the tokens ``requests`` feed requests sampled."""
        if not requests:
            return metrics
        lines = []
        for line in metrics.splitlines():
            name, _, value = line.partition(" ")
            if name == PREDICTED_METRIC:
                try:
                    line = f"{name} {max(0.0, float(value) - requests):g}"
                except ValueError:
                    pass
            lines.append(line)
        return "\n".join(lines) + "\n"


class _Refused(ValueError):
    pass


async def _post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    async with session.post(url, json=body, headers=headers) as answer:
        if answer.status != 200:
            raise _Refused(f"{url}: {answer.status}")
        data = await answer.json()
    if not isinstance(data, dict):
        raise _Refused(f"{url}: not an object")
    return data
