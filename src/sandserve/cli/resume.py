"""The command that carries on after Ctrl-C: the one the user typed, as they typed it, with what is left."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence


def program() -> str:
    """How the user started this program: its name where the shell finds it by that name, else its path."""
    invoked = sys.argv[0] if sys.argv and sys.argv[0] else "sandserve"
    name = os.path.basename(invoked)
    if name == "__main__.py":  # python -m sandserve.cli
        return f"{shlex.quote(sys.executable)} -m sandserve.cli"
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(invoked):
        return name
    return shlex.quote(invoked) if os.sep in invoked else name


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
