"""The command that carries on after Ctrl-C: the one the user typed, as they typed it, with what is left."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from sandserve.cli.program import program


def command_line(args: Sequence[str]) -> str:
    """``program() ARGS``, quoted for a POSIX shell."""
    return " ".join([program(), *(shlex.quote(arg) for arg in args)])


def without(args: Sequence[str], *, valued: Sequence[str] = (), flags: Sequence[str] = ()) -> list[str]:
    """``args`` less the options named: ``--name VALUE`` or ``--name=VALUE`` for ``valued``, a bare
    ``--name`` for ``flags``."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in valued:
            skip = "=" not in arg
        elif arg not in flags:
            kept.append(arg)
    return kept


def this_command_args() -> list[str]:
    """The arguments this verb was started with (what follows the program name)."""
    return sys.argv[1:]
