"""One way to choose the endpoint on every verb that uses one: `-e/--endpoint ID`. Verbs that took the id as
a positional argument keep it; given both ways, the two must agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_WHICH = "An endpoint id from `sandserve ls` (a unique prefix is enough)."
_DEFAULTS = {
    "env": " Default: ENDPOINT (+TOKEN) from the environment, else the one endpoint that is up.",
    "ledger": " Default: the one endpoint that is up.",
    "many": " Repeat for several.",
    "top": " A fleet's id shows its gateway and workers. Default: every endpoint up.",
}


def endpoint_option(
    dest: str = "endpoint_option", *, default: str = "env", multiple: bool = False
) -> Callable[[F], F]:
    """The shared ``-e/--endpoint ID`` option, stored in ``dest``. ``default`` says what is used without it:
    ``env`` (what `connect()` picks), ``ledger`` (the ledger's one endpoint up) or ``many`` (a list)."""
    return click.option(
        "-e", "--endpoint", dest, metavar="ID", multiple=multiple, help=_WHICH + _DEFAULTS[default]
    )


def chosen_endpoint(positional: str | None, option: str | None) -> str | None:
    """The id given as ``ID`` or as ``-e ID`` (the same id both ways is fine; two different ones are not)."""
    if positional is not None and option is not None and positional != option:
        raise click.UsageError(
            f"Two endpoints given: {positional!r} and -e {option!r}. Name one, either way."
        )
    return option if option is not None else positional
