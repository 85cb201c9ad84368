"""How the user runs sandserve, so that every command printed as advice runs when pasted.

After `make`, `sandserve` lives in `.venv/bin/` and is usually not on PATH: a hint saying `sandserve ls` would
fail with "command not found". The library's messages say `sandserve VERB` (it cannot know how it was run);
the CLI names the program as the user invoked it instead, and says plain `sandserve` once that resolves to
this very program.
"""

from __future__ import annotations

import os
import re
import shlex
import sys

#: A command inside a message: `sandserve VERB...` in backticks, or "$(sandserve VERB...)" for eval.
_COMMAND = re.compile(r"(?<=`)sandserve(?= )|(?<=\$\()sandserve(?= )")


def program() -> str:
    """How the user started this program: its name where the shell finds it by that name (`sandserve`), else
    its path as typed (`.venv/bin/sandserve`); `python -m sandserve.cli` with this interpreter when run so."""
    invoked = sys.argv[0] if sys.argv and sys.argv[0] else "sandserve"
    if invoked.startswith("-"):  # python -c: no program of ours was run, only its code
        return "sandserve"
    name = os.path.basename(invoked)
    if name == "__main__.py":  # python -m sandserve.cli
        return f"{shlex.quote(sys.executable)} -m sandserve.cli"
    found = _found_on_path(name)
    if found and os.path.realpath(found) == os.path.realpath(invoked):
        return name
    return shlex.quote(invoked) if os.sep in invoked else name


def _found_on_path(name: str) -> str | None:
    """The file the shell runs for ``name``: shutil.which's search on POSIX, here because importing shutil
    (which loads its archive codecs) would cost every verb 2 ms at start."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def runnable(text: str) -> str:
    """``text`` with each quoted `sandserve VERB` command naming the program as it is run here."""
    name = program()
    return text if name == "sandserve" else _COMMAND.sub(name, text)
