"""What a benchmark sends: random prompts, shared-prefix groups, a JSONL file of prompts, or given messages.

Lengths asked of the random datasets are in words; the tokens actually sent and generated are what the
server's ``usage`` reports (no tokenizer on this side). Output lengths are forced with ``ignore_eos`` (as
SGLang's and vLLM's random datasets do) so that a level's output tokens are what was asked.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandserve.errors import ConfigError

_WORDS = [
    "river",
    "stone",
    "light",
    "garden",
    "window",
    "engine",
    "morning",
    "thread",
    "ocean",
    "lantern",
    "paper",
    "circuit",
    "meadow",
    "harbor",
    "ember",
    "silver",
    "north",
    "echo",
    "field",
    "kernel",
    "winter",
    "bridge",
    "candle",
    "orbit",
    "signal",
    "cloud",
    "quiet",
    "agent",
    "sandbox",
    "token",
    "amber",
    "basalt",
    "cedar",
    "delta",
    "falcon",
    "glacier",
    "hollow",
    "island",
    "juniper",
    "kestrel",
    "lagoon",
    "maple",
    "nectar",
    "opal",
    "prairie",
    "quartz",
    "raven",
    "saffron",
    "tundra",
    "umber",
    "valley",
    "willow",
    "yonder",
    "zephyr",
    "anchor",
    "beacon",
    "canyon",
    "dune",
    "fjord",
    "grove",
]


@dataclass(frozen=True)
class BenchPrompt:
    messages: list[dict[str, Any]]
    max_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)
    """More request fields (``ignore_eos``, ``response_format`` ...)."""


class PromptSource:
    """An endless supply of prompts: generated ones are fresh each time (no accidental cache hits between
    levels); a finite list is cycled."""

    def __init__(
        self, name: str, make: Callable[[int], BenchPrompt] | None = None, items: Sequence[BenchPrompt] = ()
    ):
        if make is None and not items:
            raise ConfigError(
                f"The {name} dataset has no prompts.", hint="Give a file with at least one prompt."
            )
        self.name = name
        self._make = make
        self._items = list(items)
        self._next = 0

    def take(self, count: int) -> list[BenchPrompt]:
        start, self._next = self._next, self._next + count
        if self._make is not None:
            return [self._make(i) for i in range(start, start + count)]
        return [self._items[i % len(self._items)] for i in range(start, start + count)]

    def describe(self) -> str:
        return self.name if self._make is not None else f"{self.name} ({len(self._items)} prompts, cycled)"


def _length(rng: random.Random, mean: int, range_ratio: float) -> int:
    """SGLang's --random-range-ratio: uniform in [mean * ratio, mean] (ratio 1: exactly ``mean``)."""
    low = max(int(mean * range_ratio), 1)
    return rng.randint(low, max(mean, low))


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def random_prompts(
    input_len: int = 256, output_len: int = 64, *, range_ratio: float = 1.0, seed: int = 0
) -> PromptSource:
    _check_lengths(input_len=input_len, output_len=output_len)
    if not 0 < range_ratio <= 1:
        raise ConfigError(
            "--range-ratio must be in (0, 1].", hint="1 gives fixed lengths; 0.5 gives [len/2, len]."
        )

    def make(i: int) -> BenchPrompt:
        rng = random.Random(f"{seed}:{i}")
        text = _words(rng, _length(rng, input_len, range_ratio))
        return BenchPrompt(
            [{"role": "user", "content": text}], _length(rng, output_len, range_ratio), {"ignore_eos": True}
        )

    return PromptSource(f"random (input ~{input_len} words, output {output_len} tokens)", make)


def shared_prefix_prompts(
    groups: int = 4,
    prompts_per_group: int = 8,
    system_len: int = 512,
    question_len: int = 32,
    output_len: int = 64,
    *,
    seed: int = 0,
) -> PromptSource:
    """SGLang's generated-shared-prefix: ``groups`` system prompts, each shared by ``prompts_per_group``
    questions (the prefix a radix cache keeps)."""
    _check_lengths(groups=groups, prompts_per_group=prompts_per_group, system_len=system_len)
    _check_lengths(question_len=question_len, output_len=output_len)
    prefixes = [_words(random.Random(f"{seed}:prefix:{g}"), system_len) for g in range(groups)]
    size = groups * prompts_per_group
    items = []
    for i in range(size):
        rng = random.Random(f"{seed}:question:{i}")
        items.append(
            BenchPrompt(
                [
                    {"role": "system", "content": prefixes[i // prompts_per_group]},
                    {"role": "user", "content": _words(rng, question_len) + "?"},
                ],
                output_len,
                {"ignore_eos": True},
            )
        )
    name = f"shared-prefix ({groups} groups x {prompts_per_group}, system {system_len} words)"
    return PromptSource(name, items=items)


def jsonl_prompts(path: str | Path, *, output_len: int = 128) -> PromptSource:
    """One JSON object a line: ``{"prompt": "..."}`` or ``{"messages": [...]}``, optionally ``max_tokens``
    (or ``output_len``); an OpenAI batch line (``{"body": {"messages": ...}}``) works too."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No prompt file at {path}.", hint='Give a JSONL file: one {"prompt": ...} a line.')
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ConfigError(
                f"{path}:{number} is not JSON ({exc}).",
                hint='Each line must be an object such as {"prompt": "..."}.',
            ) from exc
        items.append(_prompt_from(data, output_len, f"{path}:{number}"))
    return PromptSource(f"prompts from {path.name}", items=items)


def _prompt_from(data: Any, output_len: int, where: str) -> BenchPrompt:
    if isinstance(data, dict) and isinstance(data.get("body"), dict):
        data = data["body"]
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} is not a JSON object.", hint='Write {"prompt": "..."} or {"messages": [...]}.'
        )
    max_tokens = next((data[k] for k in ("max_tokens", "output_len") if data.get(k) is not None), output_len)
    if isinstance(data.get("messages"), list):
        messages = data["messages"]
    elif isinstance(data.get("prompt"), str):
        messages = [{"role": "user", "content": data["prompt"]}]
    else:
        raise ConfigError(f"{where} has neither prompt nor messages.", hint='Write {"prompt": "..."}.')
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"{where}: max_tokens must be a positive integer.", hint="Or leave it out.")
    return BenchPrompt(messages, max_tokens)


def given_prompts(name: str, prompts: Sequence[BenchPrompt]) -> PromptSource:
    return PromptSource(name, items=prompts)


def _check_lengths(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} must be at least 1 (got {value}).", hint=f"Pass {flag} 1 or more.")
