"""Waiting for something to happen, the one way the tests do it.

A timeout here is a ceiling generous enough for a machine twice as slow as usual, never a measurement: a test
waits for the event itself (a file written, a process gone, a server listening) and fails only when it never
comes, saying what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(condition: Callable[[], T], *, what: str, timeout: float = 60.0, interval: float = 0.05) -> T:
    """Call ``condition`` until it returns something truthy and return that; after ``timeout`` seconds raise
    AssertionError naming ``what`` (and the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last seen: {value!r})")
        time.sleep(interval)


def poll_while(
    condition: Callable[[], object], *, what: str, timeout: float = 60.0, interval: float = 0.05
) -> None:
    """Wait until ``condition`` turns false (a process gone, a port free), or raise as ``poll_until`` does."""
    poll_until(lambda: not condition(), what=what, timeout=timeout, interval=interval)
