"""Settings read from the user's files: `.env` in the current directory, as the guide's scripts do."""

from __future__ import annotations

from functools import cache


@cache
def load_dotenv_once() -> None:
    """Load `.env` from the current directory into the environment, never overriding what is already set."""
    from dotenv import find_dotenv, load_dotenv

    path = find_dotenv(usecwd=True)
    if path:
        load_dotenv(path, override=False)
