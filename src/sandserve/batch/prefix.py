"""Prefix order: one request of each shared-prefix group first, so the server computes each prefix once.

What is kept per request is a short key and where its line starts in the input (not its body): at 100,000
requests that is a few tens of MB however long the prompts are; the bodies are read again when sent.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any, TypeVar

from sandserve.batch.types import BatchRequest, dumps

#: Requests whose prompts share their first PREFIX_KEY_CHARS characters form one shared-prefix group.
PREFIX_KEY_CHARS = 1024
#: Characters of the prompt kept to sort groups, so that groups sharing a shorter prefix still sit together.
SORT_CHARS = 64
#: Rough characters per token, used only to size prefix-order waves against the KV pool.
CHARS_PER_TOKEN = 4
#: Share of the KV pool one wave's shared prefixes may fill, leaving room for the requests that reuse them.
KV_POOL_WAVE_SHARE = 0.7

T = TypeVar("T")


def prompt_text(request: BatchRequest) -> str:
    """The request's prompt as text, in the order the server sees it (roles included): the prefix key."""
    body = request.body
    if request.url == "/v1/chat/completions":
        parts = [dumps(body["tools"]).decode()] if body.get("tools") else []
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                parts.append(f"{message.get('role', '')}\x00{_content_text(message.get('content'))}")
        return "\x00".join(parts)
    if request.url == "/v1/completions":
        prompt = body.get("prompt")
    else:
        prompt = body.get("text", body.get("input_ids"))
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else dumps(prompt).decode()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    return "" if content is None else dumps(content).decode()


def _part_text(part: Any) -> str:
    """A text part's text; any other part (an image...) as its JSON, which identifies it just as well."""
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return str(part["text"])
    return dumps(part).decode()


def prefix_key(text: str, key_chars: int = PREFIX_KEY_CHARS) -> bytes:
    """A small sortable key: equal for prompts that share their first ``key_chars`` characters."""
    head = text[:key_chars].encode("utf-8", errors="surrogatepass")
    digest = hashlib.blake2b(head, digest_size=8).digest()
    return text[:SORT_CHARS].encode("utf-8", errors="surrogatepass") + b"\xff" + digest


def plan_waves(keyed: list[tuple[bytes, int, T]], *, kv_pool_tokens: int | None = None) -> list[list[T]]:
    """Waves from (prefix key, prompt characters, item): one item of each group, then the rest of the groups.

    Items are sorted by key, so items sharing a prefix sit together. When the KV pool size is known, groups
    are taken in chunks whose warm-up prompts fill at most KV_POOL_WAVE_SHARE of it, so that the cached
    prefixes are still there when the rest of their group arrives: waves are then warm-up 1, rest 1, warm-up
    2, rest 2, ...
    """
    keyed.sort(key=lambda entry: entry[0])
    budget_chars = math.inf
    if kv_pool_tokens is not None:
        budget_chars = kv_pool_tokens * KV_POOL_WAVE_SHARE * CHARS_PER_TOKEN
    waves: list[list[T]] = []
    warm_up: list[T] = []
    rest: list[T] = []
    warm_up_chars = 0
    previous_key: bytes | None = None
    for key, chars, item in keyed:
        if key == previous_key:
            rest.append(item)
            continue
        previous_key = key
        if warm_up and warm_up_chars + chars > budget_chars:
            waves += [warm_up, rest] if rest else [warm_up]
            warm_up, rest, warm_up_chars = [], [], 0
        warm_up.append(item)
        warm_up_chars += chars
    if warm_up:
        waves += [warm_up, rest] if rest else [warm_up]
    return waves


def plan_prefix_waves(
    requests: list[BatchRequest], *, key_chars: int = PREFIX_KEY_CHARS, kv_pool_tokens: int | None = None
) -> list[list[BatchRequest]]:
    """Waves to send one after another: one request of each shared-prefix group, then the rest of the
    groups."""
    keyed = [_keyed(request, request, key_chars) for request in requests]
    return plan_waves(keyed, kv_pool_tokens=kv_pool_tokens)


def _keyed(request: BatchRequest, item: T, key_chars: int = PREFIX_KEY_CHARS) -> tuple[bytes, int, T]:
    text = prompt_text(request)
    return prefix_key(text, key_chars), len(text), item


def offset_collector() -> tuple[list[tuple[bytes, int, int]], Callable[[int, BatchRequest], None]]:
    """A list and the callback that fills it with (prefix key, prompt characters, input offset) per
    request."""
    keyed: list[tuple[bytes, int, int]] = []

    def keep(offset: int, request: BatchRequest) -> None:
        keyed.append(_keyed(request, offset))

    return keyed, keep
