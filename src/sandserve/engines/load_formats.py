"""What each engine's load route answers, read into one set of fields: SGLang's ``GET /v1/loads`` (one entry
per data-parallel rank, shape read from SGLang's ``entrypoints/v1_loads.py``) and llama.cpp's ``GET /slots``
(one entry per slot). ``observe.loads`` asks every engine's routes and merges what answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def number(value: Any) -> float | None:
    """A finite number, else None (JSON's Infinity/NaN, a string, a bool are no reading)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    as_float = float(value)
    return as_float if math.isfinite(as_float) else None


def _sum(entries: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [v for v in (number(e.get(key)) for e in entries) if v is not None]
    return sum(values) if values else None


def _mean(entries: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [v for v in (number(e.get(key)) for e in entries) if v is not None]
    return sum(values) / len(values) if values else None


@dataclass
class LoadFields:
    running: float | None = None
    queued: float | None = None
    token_usage: float | None = None
    used_tokens: float | None = None
    capacity_tokens: float | None = None
    cache_hit_rate: float | None = None
    gen_throughput: float | None = None
    decoding_tokens: float | None = None
    """Tokens generated so far by the requests still running (llama.cpp counts them only once they end)."""


def parse_v1_loads(body: Any) -> LoadFields:
    """SGLang's ``/v1/loads`` (per DP rank), or a gateway's list of its workers' loads in the same keys."""
    entries = body.get("loads") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return LoadFields()
    ranks = [e for e in entries if isinstance(e, dict)]
    return LoadFields(
        running=_sum(ranks, "num_running_reqs"),
        queued=_sum(ranks, "num_waiting_reqs"),
        token_usage=_mean(ranks, "token_usage"),
        used_tokens=_sum(ranks, "num_used_tokens"),
        capacity_tokens=_sum(ranks, "max_total_num_tokens"),
        cache_hit_rate=_mean(ranks, "cache_hit_rate"),
        gen_throughput=_sum(ranks, "gen_throughput"),
    )


def parse_slots(body: Any) -> LoadFields:
    """llama.cpp's ``/slots``: a slot is one running request; its context is its share of the KV cache."""
    if not isinstance(body, list):
        return LoadFields()
    slots = [s for s in body if isinstance(s, dict)]
    busy = [s for s in slots if s.get("is_processing")]
    capacity = _sum(slots, "n_ctx")
    used = decoding = 0.0
    for slot in busy:
        used += number(slot.get("n_prompt_tokens")) or 0.0
        next_token = slot.get("next_token")
        if isinstance(next_token, list) and next_token and isinstance(next_token[0], dict):
            decoding += number(next_token[0].get("n_decoded")) or 0.0
    return LoadFields(
        running=float(len(busy)),
        decoding_tokens=decoding,
        used_tokens=used + decoding,
        capacity_tokens=capacity,
        token_usage=(used + decoding) / capacity if capacity else None,
    )
