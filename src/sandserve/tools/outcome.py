"""What a tool call gives back to the model, wherever it ran."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_RESULT_CHARS = 16_000


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    content: str
    """What the model gets as the tool message: the result (JSON unless a string), or the error's text."""

    @classmethod
    def success(cls, value: Any) -> ToolOutcome:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return cls(True, _clip(text))

    @classmethod
    def failure(cls, message: str) -> ToolOutcome:
        return cls(False, _clip(f"error: {message}"))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " [truncated]"


def last_error_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
