"""Request priority, as each engine and the gateway expect it (facts/sglang.md, facts/gateway.md).

sandserve speaks of three priorities: ``low`` (batch work: the batch runner and classify send it), ``normal``
(everything else: a request that says nothing is normal) and ``high``. On the wire:

- SGLang 0.5.12 (started with ``--enable-priority-scheduling --default-priority-value 0``, higher values
  first): the request body's integer ``priority``, -1 / 0 / 1. A gap of 1 reorders its waiting queue but never
  preempts a running request (its ``--priority-scheduling-preemption-threshold`` is 10).
- smg 1.13 (started with ``--priority-scheduler-enabled``): the ``x-smg-priority`` header, bulk /
  interactive / system. smg does not pass the header on to its workers; it does pass the body's ``priority``
  (sglang-router 0.3.2 drops it).
- the llama-server adapter: both, read by its admission queue (``engines/admission.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from sandserve.errors import ConfigError

Priority = Literal["low", "normal", "high"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
#: What batch work sends unless told otherwise.
BATCH_PRIORITY: Priority = "low"

#: SGLang's integer priority (higher first), sent in the request body.
PRIORITY_FIELD = "priority"
SGLANG_VALUES: dict[Priority, int] = {"low": -1, "normal": 0, "high": 1}
#: What a request that says nothing gets: SGLang's --default-priority-value, the adapter's default.
DEFAULT_VALUE = SGLANG_VALUES["normal"]
#: SGLang's launch flags that turn priority scheduling on with sandserve's scale.
SGLANG_PRIORITY_FLAGS = ("--enable-priority-scheduling", "--default-priority-value", str(DEFAULT_VALUE))
#: SGLang refuses to start priority scheduling under any other --schedule-policy (server_args.py asserts).
SGLANG_PRIORITY_POLICIES = frozenset({"fcfs", "lof"})

#: smg's priority header and its classes (case-insensitive; an unknown value is treated as "default").
GATEWAY_HEADER = "x-smg-priority"
GATEWAY_CLASSES: dict[Priority, str] = {"low": "bulk", "normal": "interactive", "high": "system"}
_CLASS_VALUES = {"bulk": -1, "default": 0, "interactive": 0, "system": 1}
#: smg's launch flags: the scheduler on, and a client may ask for "interactive" (its default ceiling is
#: "default", which would clamp every interactive request down to the batch's level).
GATEWAY_PRIORITY_FLAGS = (
    "--priority-scheduler-enabled",
    "--priority-scheduler-default-max-class",
    "interactive",
)


def check_priority(name: str) -> Priority:
    if name not in PRIORITIES:
        raise ConfigError(
            f"Unknown priority {name!r}.",
            hint=f"Use one of: {', '.join(PRIORITIES)} (batch work is {BATCH_PRIORITY} by default).",
        )
    return name


def request_fields(priority: Priority) -> dict[str, Any]:
    """What a request body carries: SGLang's integer, which the gateway passes on to its workers."""
    return {PRIORITY_FIELD: SGLANG_VALUES[priority]}


def request_headers(priority: Priority) -> dict[str, str]:
    """What a request's headers carry: the gateway's class (smg reads it; others ignore it)."""
    return {GATEWAY_HEADER: GATEWAY_CLASSES[priority]}


def sglang_flags(extra_args: tuple[str, ...] | list[str]) -> list[str]:
    """The flags that turn SGLang's priority scheduling on, unless the user's own flags already choose (or
    choose a --schedule-policy that SGLang refuses to combine with it)."""
    args = list(extra_args)
    if any(arg.startswith("--enable-priority-scheduling") for arg in args):
        return []
    for i, arg in enumerate(args):
        policy = arg.split("=", 1)[1] if arg.startswith("--schedule-policy=") else None
        if arg == "--schedule-policy" and i + 1 < len(args):
            policy = args[i + 1]
        if policy is not None and policy not in SGLANG_PRIORITY_POLICIES:
            return []
    return list(SGLANG_PRIORITY_FLAGS)


def value_of(body: Any, headers: Mapping[str, str]) -> int:
    """The priority of one request as the adapter reads it: the body's integer, else the gateway header's
    class, else the default. A value that is not an integer counts as the default (SGLang answers such a
    request 400 itself; the adapter leaves that to the route)."""
    if isinstance(body, dict):
        value = body.get(PRIORITY_FIELD)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    named = headers.get(GATEWAY_HEADER)
    if named is not None:
        return _CLASS_VALUES.get(named.strip().lower(), DEFAULT_VALUE)
    return DEFAULT_VALUE


# --- waiting requests by priority, from a server's /metrics ------------------------------------------------

#: Gauges of waiting requests per priority: SGLang's (label ``priority``, the total under ``priority=""``),
#: the llama-server adapter's (the same shape) and smg's scheduler queues (label ``class``).
WAITING_METRICS = ("sglang:num_queue_reqs", "sandserve:num_queue_reqs", "smg_scheduler_queue_depth")
_LINE = re.compile(
    r"^(sglang:num_queue_reqs|sandserve:num_queue_reqs|smg_scheduler_queue_depth)\{([^}]*)\}\s+(\S+)",
    re.MULTILINE,
)
_LABEL = re.compile(r'(priority|class)="([^"]*)"')


def waiting_by_priority(metrics_text: str) -> dict[int, int] | None:
    """Waiting requests per integer priority, summed over ranks and workers; None when the server reports
    no waiting requests by priority (no such metric, or priority scheduling off)."""
    waiting: dict[int, int] = {}
    found = False
    for match in _LINE.finditer(metrics_text):
        labels = dict(_LABEL.findall(match.group(2)))
        count = _finite(match.group(3))
        if count is None:
            continue
        if "class" in labels:
            priority = _CLASS_VALUES.get(labels["class"])
        else:
            priority = _int_or_none(labels.get("priority", ""))
        if priority is None:
            continue  # the total (priority=""), or a class this scale does not know
        found = True
        waiting[priority] = waiting.get(priority, 0) + int(count)
    return waiting if found else None


def _finite(text: str) -> float | None:
    """A sample's value, or None where it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def waiting_above(waiting: Mapping[int, int], priority: Priority) -> int:
    """Requests waiting with a higher priority than ``priority``'s: those a batch should make room for."""
    mine = SGLANG_VALUES[priority]
    return sum(count for value, count in waiting.items() if value > mine)


#: The llama-server adapter's summary of waits for a first token, by priority (first_tokens.py).
FIRST_TOKEN_METRIC = "sandserve:time_to_first_token_seconds"
_FIRST_TOKEN_LINE = re.compile(
    rf'^{re.escape(FIRST_TOKEN_METRIC)}_(sum|count)\{{priority="(-?\d+)"\}}\s+(\S+)', re.MULTILINE
)


def first_tokens_above(metrics_text: str, priority: Priority) -> tuple[float, int] | None:
    """Seconds to the first token summed, and requests counted, over the priorities above ``priority``'s,
    since the server started; None when the server does not report them."""
    mine = SGLANG_VALUES[priority]
    if f"# TYPE {FIRST_TOKEN_METRIC} " not in metrics_text:
        return None
    seconds, count = 0.0, 0
    for match in _FIRST_TOKEN_LINE.finditer(metrics_text):
        value = _finite(match.group(3))
        if int(match.group(2)) <= mine or value is None:
            continue
        if match.group(1) == "sum":
            seconds += value
        else:
            count += int(value)
    return seconds, count
