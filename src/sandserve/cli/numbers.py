"""Numbers as a person reads them in a table or a progress line (1.2k), and in full for a pipe."""

from __future__ import annotations

import math


def short_number(value: float, digits: int = 0) -> str:
    """A number in at most about five characters: 950, 9.5, 1.2k, 12k, 3.4M."""
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    if magnitude < 1000:
        text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
        # 999.96 rounds to 1000.0: give it the short form it would have had.
        if abs(float(text)) < 1000:
            return text
    for size, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        scaled = value / size
        if abs(round(scaled, 1)) < 10:
            return f"{scaled:.1f}{suffix}"
        if abs(round(scaled)) < 1000:
            return f"{scaled:.0f}{suffix}"
    return f"{value:.2g}"


def full_number(value: float) -> str:
    """A number for a pipe: whole, without trailing zeros (1234.5, 0.25, 17)."""
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4f}".rstrip("0").rstrip(".")
