"""Text styled with the terminal's own codes (SGR), for verbs that print a table and exit: the style names
rich takes ("bold", "dim", "green", "bold red"), without loading rich. Colour is left out where rich leaves
it out on a terminal: ``NO_COLOR`` set, or a terminal that says it has none (``TERM=dumb``)."""

from __future__ import annotations

import os

#: The style words the verbs' tables use, as SGR parameters.
SGR = {
    "bold": "1",
    "dim": "2",
    "italic": "3",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
#: What the terminal says when it cannot show colour.
COLOURLESS_TERMS = frozenset({"dumb", "unknown"})


def colour_wanted() -> bool:
    return os.environ.get("NO_COLOR", "") == "" and os.environ.get("TERM", "").lower() not in COLOURLESS_TERMS


def styled(text: str, style: str) -> str:
    """``text`` in ``style`` (space-separated words of ``SGR``); unknown words raise KeyError."""
    codes = ";".join(SGR[word] for word in style.split())
    if not codes or not text or not colour_wanted():
        return text
    return f"\x1b[{codes}m{text}\x1b[0m"


def styled_line(pieces: list[tuple[str, str]]) -> str:
    return "".join(styled(text, style) for text, style in pieces)


def terminal_width() -> int:
    """The width rich would draw at: ``COLUMNS`` when set, else the terminal's, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return 80
