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

#: A cell: text as it is shown, or a number (short form on a terminal, in full into a pipe); None is "-".
Cell = str | int | float | None

#: A free-text column is never cut narrower than this (or its header).
NARROWEST = 12
#: Characters between two columns (rich's separator plus one space of padding).
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
    from sandserve.cli.console import out

    out.print(render_table(columns, rows, width=out.width, title=title, more=more), soft_wrap=False)


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
    """What a terminal ``width`` columns wide shows: the title, the table, and a caption naming the columns
    left out."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    texts = [
        [shown(cell, column, terminal=True) for column, cell in zip(columns, row, strict=True)]
        for row in rows
    ]
    natural = [
        max([len(column.header), *(len(_one_line(row[index])) for row in texts)])
        for index, column in enumerate(columns)
    ]
    shown_at = _columns_that_fit(columns, natural, width)
    widths = _widths(columns, natural, shown_at, width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for index in shown_at:
        column = columns[index]
        table.add_column(
            # A Text, not a str: rich would parse a str for markup and emoji codes (its emoji table alone
            # takes 2 ms to load) and a header has neither.
            Text(column.header),
            justify="right" if column.number else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=widths[index],
        )
    for row in texts:
        cells = []
        for index in shown_at:
            value = _one_line(row[index])
            style = columns[index].style
            cells.append(Text(value, style=(style(value) if style else None) or ""))
        table.add_row(*cells)
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="bold"))
    parts.append(table)
    hidden = [column.header for index, column in enumerate(columns) if index not in shown_at]
    if hidden:
        caption = f"not shown at this width: {', '.join(hidden)} ({more})"
        # Wrapped here, not by the console: a console that soft-wraps (top's live screen) would crop it.
        import textwrap

        parts += [Text(line, style="dim") for line in textwrap.wrap(caption, max(width, 20))]
    return Group(*parts)


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
