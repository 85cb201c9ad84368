"""Tables on a terminal are written with the terminal's own codes: every style a verb's table uses is
known, colour follows NO_COLOR and TERM as rich's does, and the width is rich's."""

from __future__ import annotations

import re

import pytest

from sandserve.cli.listing import ENDPOINT_COLUMNS, STATE_STYLES
from sandserve.cli.styled import styled, styled_line, terminal_width
from sandserve.cli.tables import table_lines


@pytest.fixture(autouse=True)
def colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def test_every_style_of_the_verbs_tables_is_known():
    from sandserve.cli.fleet import _STYLES as FLEET_STYLES
    from sandserve.cli.top_view import _STATE_STYLES as TOP_STYLES
    from sandserve.cli.use import _STATUS_COLOURS as TOUR_STYLES

    for style in {
        *STATE_STYLES.values(),
        *FLEET_STYLES.values(),
        *TOP_STYLES.values(),
        *TOUR_STYLES.values(),
    }:
        assert styled("x", style).startswith("\x1b[")
    with pytest.raises(KeyError):
        styled("x", "blink")


def test_a_style_is_its_sgr_codes_and_a_reset():
    assert styled("ready", "green") == "\x1b[32mready\x1b[0m"
    assert styled("gone", "bold red") == "\x1b[1;31mgone\x1b[0m"
    assert styled("plain", "") == "plain" and styled("", "green") == ""


@pytest.mark.parametrize(("name", "value"), [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_no_colour_where_the_user_or_the_terminal_says_so(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert styled("ready", "green") == "ready"


def test_the_width_is_columns_when_set_else_the_terminals(monkeypatch):
    monkeypatch.setenv("COLUMNS", "97")
    assert terminal_width() == 97
    monkeypatch.setenv("COLUMNS", "wide")
    assert terminal_width() > 0  # this test's terminal, or 80 without one


def test_a_table_line_is_its_cells_fitted_and_styled():
    row = ["an-endpoint-1", "ready", "local", "llamacpp", "m", "http://127.0.0.1:9", "5s"]
    header, rule, line = (styled_line(pieces) for pieces in table_lines(ENDPOINT_COLUMNS, [row], width=120))
    assert header.startswith("\x1b[1mid           \x1b[0m  \x1b[1mstate\x1b[0m")
    assert set(rule) == {"─"} and len(rule) == len(re.sub(r"\x1b\[[\d;]*m", "", header))
    assert line == "an-endpoint-1  \x1b[32mready\x1b[0m  local     llamacpp  m      http://127.0.0.1:9  5s"
