"""Tables for a person and for a pipe. What a user types back (an endpoint id, a preset name) is never cut.

On a terminal a table is drawn to the terminal's width: the columns marked ``keep`` are shown whole; the
others wrap, and when they would have to wrap narrower than ``NARROWEST`` characters, the least needed ones
are left out (a caption names them). When stdout is not a terminal (a pipe, a file, a CI log) the rows are
printed as plain tab-separated lines, no header and no colour, as `gh` does: `sandserve ls | cut -f1` gives
the ids.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

#: A column that would have to wrap narrower than this is left out instead (if it may be).
NARROWEST = 16
#: What rich draws around a table: the two outer borders and a separator (space, bar, space) per column gap.
_BORDER = 4
_GAP = 3


@dataclass(frozen=True)
class Column:
    header: str
    keep: bool = False
    """A value the user types back: never cut, never wrapped, never left out."""
    whole: bool = False
    """A value worth copying whole (a URL, a model id): left out, if it may be, rather than wrapped."""
    drop_order: int | None = None
    """Columns that may be left out when the terminal is too narrow, lowest first; None: always shown."""
    style: Callable[[str], str | None] | None = None
    """The rich style of a cell, from its plain value (the state column's colour)."""


def show_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, title: str | None = None) -> None:
    """Print ``rows`` (plain strings, one per column): a table on a terminal, else tab-separated lines."""
    if not sys.stdout.isatty():
        for row in rows:
            click.echo("\t".join(_one_line(value) for value in row))
        return
    from sandserve.cli.console import out

    out.print(render_table(columns, rows, width=out.width, title=title), soft_wrap=False)


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int, title: str | None = None
) -> Table:
    """The rich table for a terminal ``width`` columns wide."""
    from rich.table import Table

    shown = _columns_that_fit(columns, rows, width)
    hidden = [column.header for column in columns if column not in shown]
    table = Table(
        title=title,
        caption=f"not shown at this width: {', '.join(hidden)} (--json has everything)" if hidden else None,
        caption_style="dim",
        caption_justify="left",
    )
    for column in shown:
        index = columns.index(column)
        if column.keep or column.whole:
            longest = max([len(column.header), *(len(row[index]) for row in rows)])
            table.add_column(column.header, no_wrap=True, min_width=longest)
        else:
            table.add_column(column.header, overflow="fold")
    for row in rows:
        cells: list[Text] = []
        for column in shown:
            value = row[columns.index(column)]
            style = column.style(value) if column.style else None
            cells.append(_styled(value, style))
        table.add_row(*cells)
    return table


def _columns_that_fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[Column]:
    narrowest = {}
    for index, column in enumerate(columns):
        natural = max([len(column.header), *(len(row[index]) for row in rows)])
        fold_to = max(len(column.header), NARROWEST)
        narrowest[column.header] = natural if column.keep or column.whole else min(natural, fold_to)
    shown = list(columns)
    droppable = sorted(
        (column for column in columns if column.drop_order is not None and not column.keep),
        key=lambda column: column.drop_order or 0,
    )
    while droppable and _table_width(shown, narrowest) > width:
        shown.remove(droppable.pop(0))
    return shown


def _table_width(columns: Sequence[Column], widths: dict[str, int]) -> int:
    return sum(widths[column.header] for column in columns) + _GAP * (len(columns) - 1) + _BORDER


def _styled(value: str, style: str | None) -> Text:
    from rich.text import Text

    return Text(value, style=style or "")


def _one_line(value: str) -> str:
    """A cell as one tab-free line, so each row stays one line of fields."""
    return " ".join(value.split()) if value else "-"
