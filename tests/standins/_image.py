"""What a fresh sandbox's filesystem holds, as far as the commands it runs can tell.

A real sandbox starts from its image: the image's own directories (/usr, /bin, /opt...) and the sandbox's
home, nothing of the machine that created it. The stand-in runs sandbox processes on this machine, where every
path exists, so it would run what a real sandbox cannot (this machine's llama-server build, a file under /root
or /tmp). It reads each shell command's command words and refuses one that names such a path, as bash in the
sandbox would: `bash: line 1: PATH: No such file or directory`, exit status 127. A program reached by bare
name is found through the sandbox's PATH (the test harness's directories put in front of it stand for the
image's own).

This is a reading of the command text, not of what runs: it sees command words as written (a path in a
variable or built by the shell is not seen), and it refuses the whole command where bash would first run what
precedes the missing program.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

#: Directories a stock image has (their content is this machine's: close enough for what the tests run).
IMAGE_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt", "/etc", "/dev", "/proc")
#: bash's exit status for a command it cannot find.
NOT_FOUND_STATUS = 127

_SEPARATORS = frozenset({";", "&", "&&", "|", "||", "|&", "(", ")", "\n", ";;", "{", "!"})
_KEYWORDS = frozenset({"if", "then", "else", "elif", "do", "while", "until", "time"})
#: Commands that run the word after them (and the options they take first).
_PREFIXES = frozenset({"exec", "command", "nohup", "env", "setsid", "nice", "timeout", "stdbuf"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_DURATION = re.compile(r"^\d+(\.\d+)?[smhd]?$")


def command_words(command: str) -> list[str]:
    """The words bash runs as programs in ``command`` (assignments, redirections and prefixes like ``exec``
    skipped)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="();<>|&\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: bash would refuse it with a syntax error of its own
        return []
    words: list[str] = []
    expecting = True
    skip_next = False
    for token in tokens:
        if skip_next:  # the target of a redirection
            skip_next = False
            continue
        if token in _SEPARATORS:
            expecting = True
            continue
        if set(token) <= set("<>&|"):  # a redirection operator (`>`, `2>&1` arrives as `2`, `>&`, `1`)
            skip_next = not token.endswith("&")
            continue
        if not expecting:
            continue
        if token in _KEYWORDS or _ASSIGNMENT.match(token) or token in _PREFIXES:
            continue
        if token.startswith("-") or _DURATION.match(token):  # a prefix command's option or duration
            continue
        words.append(token)
        expecting = False
    return words


def missing_program(command: str, home: Path) -> str | None:
    """The first program ``command`` names by an absolute path that a fresh sandbox would not have, if any:
    outside the image's directories and the sandbox's home (``home``, where this machine keeps it)."""
    allowed = (*IMAGE_DIRS, str(home))
    for word in command_words(command):
        if not word.startswith("/"):
            continue
        if not any(word == root or word.startswith(root.rstrip("/") + "/") for root in allowed):
            return word
    return None


def not_found_argv(program: str) -> list[str]:
    """A process that fails as bash does when a command names a program that is not there."""
    message = f"bash: line 1: {program}: No such file or directory"
    return ["bash", "-c", f"echo {shlex.quote(message)} >&2; exit {NOT_FOUND_STATUS}"]
