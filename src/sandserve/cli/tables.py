"""Tables for a person and for a pipe: one helper for every verb that prints rows.

On a terminal a table is drawn to the terminal's width, one line per row: what a user types back or reads as
a name (``keep``: an endpoint id, a preset name, a model) and every header are shown whole; free text
(``cut``: an error, a note) is shortened with an ellipsis; any other column is shown whole or, when the row
would not fit, left out, lowest ``drop_order`` first, with a caption naming what was left out. Numbers are
right-aligned and get short forms (``1.2k``).

When stdout is not a terminal (a pipe, a file, a CI log) the rows are printed as tab-separated lines under a
header line, numbers in full and no colour, as `kubectl` does: `sandserve ls | tail -n +2 | cut -f1` gives
the ids.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from sandserve.cli.numbers import full_number, short_number

if TYPE_CHECKING:
    from rich.console import RenderableType

#: A line of a drawn table: its pieces, each with its style ("green", "bold", "dim"; "" for none).
Line = list[tuple[str, str]]
#: A cell: text as it is shown, or a number (short form on a terminal, in full into a pipe); None is "-".
Cell = str | int | float | None

#: A free-text column is never cut narrower than this (or its header).
NARROWEST = 12
#: Spaces between two columns.
GAP = 2
#: What a table that leaves columns out tells the reader, unless the verb says where the rest is.
DEFAULT_MORE = "--json has everything"


@dataclass(frozen=True)
class Column:
    header: str
    keep: bool = False
    """Shown whole, never left out: a value the user types back or reads as a name."""
    drop_order: int | None = None
    """Columns that may be left out when the terminal is too narrow, lowest first; None: always shown."""
    style: Callable[[str], str | None] | None = None
    """The rich style of a cell, from its shown value (the state column's colour)."""
    number: bool = False
    """Right-aligned; int and float cells get short forms on a terminal (1.2k)."""
    digits: int = 0
    """Decimals of a number below 1,000 on a terminal (req/s: 1; tokens: 0)."""
    cut: bool = False
    """Free text (an error, a note): shortened with an ellipsis to fit, never wrapped."""


def shown(cell: Cell, column: Column, *, terminal: bool) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, bool):
        return str(cell).lower()
    if isinstance(cell, (int, float)):
        return short_number(cell, column.digits) if terminal else full_number(cell)
    return cell


def is_terminal() -> bool:
    return sys.stdout.isatty()


def show_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    title: str | None = None,
    more: str = DEFAULT_MORE,
) -> None:
    """Print ``rows`` (one cell per column): a table on a terminal, else tab-separated lines under a header
    line (the title, if any, goes to stderr there: it is for a person)."""
    if not is_terminal():
        if title:
            click.echo(title, err=True)
        click.echo(tab_separated(columns, rows))
        return
    # Written with the terminal's own codes, not through rich: loading rich's console is a third of a brief
    # verb's start-up (`ls` on a terminal), and the table is laid out here anyway.
    from sandserve.cli.styled import styled_line, terminal_width

    lines = table_lines(columns, rows, width=terminal_width(), title=title, more=more)
    click.echo("\n".join(styled_line(line) for line in lines))


def tab_separated(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> str:
    """The header line and one line per row, fields separated by tabs, nothing cut or shortened."""
    lines = ["\t".join(_one_line(column.header) for column in columns)]
    for row in rows:
        lines.append(
            "\t".join(
                _one_line(shown(cell, column, terminal=False))
                for column, cell in zip(columns, row, strict=True)
            )
        )
    return "\n".join(lines)


def render_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    width: int,
    title: str | None = None,
    more: str = DEFAULT_MORE,
) -> RenderableType:
    """``table_lines`` as a rich renderable, for a screen rich draws (`top`'s, a benchmark's)."""
    from rich.console import Group
    from rich.text import Text

    lines = table_lines(columns, rows, width=width, title=title, more=more)
    return Group(*(Text.assemble(*line, no_wrap=True, overflow="ignore") for line in lines))


def table_lines(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    width: int,
    title: str | None = None,
    more: str = DEFAULT_MORE,
) -> list[Line]:
    """What a terminal ``width`` columns wide shows: the title, the header, a rule, one line per row, and a
    caption naming the columns left out."""
    texts = [
        [_one_line(shown(cell, column, terminal=True)) for column, cell in zip(columns, row, strict=True)]
        for row in rows
    ]
    natural = [
        max([len(column.header), *(len(row[index]) for row in texts)]) for index, column in enumerate(columns)
    ]
    shown_at = _columns_that_fit(columns, natural, width)
    widths = _widths(columns, natural, shown_at, width)
    lines: list[Line] = [[(title, "bold")]] if title else []
    lines.append(_joined([(columns[i].header, "bold") for i in shown_at], columns, shown_at, widths))
    lines.append([("─" * (sum(widths.values()) + GAP * (len(shown_at) - 1)), "")])
    for row in texts:
        cells = []
        for index in shown_at:
            style = columns[index].style
            cells.append((row[index], (style(row[index]) if style else None) or ""))
        lines.append(_joined(cells, columns, shown_at, widths))
    hidden = [column.header for index, column in enumerate(columns) if index not in shown_at]
    if hidden:
        import textwrap  # here: its import compiles patterns every start would pay for

        caption = f"not shown at this width: {', '.join(hidden)} ({more})"
        lines += [[(line, "dim")] for line in textwrap.wrap(caption, max(width, 1))]
    return lines


def _joined(
    cells: Sequence[tuple[str, str]],
    columns: Sequence[Column],
    shown_at: Sequence[int],
    widths: dict[int, int],
) -> Line:
    """One line of cells, each fitted to its column (cut with an ellipsis where narrower), a gap between."""
    line: Line = []
    for n, ((text, style), index) in enumerate(zip(cells, shown_at, strict=True)):
        width = widths[index]
        if len(text) > width:
            text = text[: max(width - 1, 0)] + "…"
        fitted = text.rjust(width) if columns[index].number else text.ljust(width)
        if n == len(cells) - 1:
            fitted = fitted.rstrip()
        if n:
            line.append((" " * GAP, ""))
        line.append((fitted, style))
    return line


def _min_width(column: Column, natural: int) -> int:
    return min(natural, max(len(column.header), NARROWEST)) if column.cut else natural


def _table_width(columns: Sequence[Column], natural: Sequence[int], indexes: Sequence[int]) -> int:
    return sum(_min_width(columns[i], natural[i]) for i in indexes) + GAP * (len(indexes) - 1)


def _columns_that_fit(columns: Sequence[Column], natural: Sequence[int], width: int) -> list[int]:
    shown = list(range(len(columns)))
    droppable = sorted(
        (i for i, column in enumerate(columns) if column.drop_order is not None and not column.keep),
        key=lambda i: columns[i].drop_order or 0,
    )
    dropped = []
    while droppable and _table_width(columns, natural, shown) > width:
        dropped.append(droppable.pop(0))
        shown.remove(dropped[-1])
    # A wide column left out may have made room for narrower ones left out before it: they come back.
    for index in reversed(dropped[:-1]):
        candidate = sorted([*shown, index])
        if _table_width(columns, natural, candidate) <= width:
            shown = candidate
    return shown


def _widths(
    columns: Sequence[Column], natural: Sequence[int], shown: Sequence[int], width: int
) -> dict[int, int]:
    """Every shown column at its natural width; free-text columns share what is left, down to their least.
    Where even that is too wide (nothing more may be left out), the other columns that are not kept give
    way too, down to their header: a kept value is never cut."""
    widths = {i: natural[i] for i in shown}
    room = width - sum(natural[i] for i in shown) - GAP * (len(shown) - 1)
    if room >= 0:
        return widths
    cut = [i for i in shown if columns[i].cut]
    least = {i: _min_width(columns[i], natural[i]) for i in cut}
    if sum(natural[i] - least[i] for i in cut) < -room:
        cut += [i for i in shown if not columns[i].cut and not columns[i].keep]
        least.update({i: min(natural[i], len(columns[i].header)) for i in cut if i not in least})
    for i in cut:  # each gives up to its least, the first ones first, until the row fits
        given = min(natural[i] - least[i], -room)
        widths[i] -= given
        room += given
    return widths


def _one_line(value: str) -> str:
    """A cell as one tab-free line, so each row stays one line of fields."""
    return " ".join(value.split()) if value else "-"
