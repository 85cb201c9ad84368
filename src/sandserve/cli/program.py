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
import shutil
import sys
from pathlib import Path

#: A command inside a message: `sandserve VERB...` in backticks, or "$(sandserve VERB...)" for eval.
_COMMAND = re.compile(r"(?<=`)sandserve(?= )|(?<=\$\()sandserve(?= )")


def program() -> str:
    """The shell words that run this sandserve: `sandserve` when PATH finds this very program, else the path
    the user typed (`.venv/bin/sandserve`), else the console script beside this Python, else `python -m`."""
    script = Path(sys.executable).parent / "sandserve"
    on_path = shutil.which("sandserve")
    if on_path and script.exists() and _same_file(on_path, script):
        return "sandserve"
    invoked = sys.argv[0] if sys.argv else ""
    if Path(invoked).name == "sandserve" and os.sep in invoked and Path(invoked).exists():
        return shlex.quote(invoked)
    if script.exists():
        return shlex.quote(_shortest(script))
    return f"{shlex.quote(sys.executable)} -m sandserve.cli"


def runnable(text: str) -> str:
    """``text`` with each quoted `sandserve VERB` command naming the program as it is run here."""
    name = program()
    return text if name == "sandserve" else _COMMAND.sub(name, text)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _shortest(path: Path) -> str:
    """``path`` relative to the working directory when below it (`.venv/bin/sandserve`), else whole."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return f"./{relative}" if len(relative.parts) == 1 else str(relative)
