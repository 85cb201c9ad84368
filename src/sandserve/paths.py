"""Where sandserve keeps things: the state directory (ledger, logs) and the cache (engine build, tiny model).

Both follow the platform's conventions and can be moved with SANDSERVE_STATE_DIR and SANDSERVE_CACHE_DIR,
which is how tests keep away from the user's own ledger.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from sandserve.errors import StateDirError


def state_dir() -> Path:
    """The directory holding the ledger and server logs, created (mode 0700) if missing."""
    path = Path(os.environ.get("SANDSERVE_STATE_DIR") or platformdirs.user_state_dir("sandserve"))
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StateDirError(path, exc.strerror or str(exc)) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(path, "it is not writable")
    return path


def logs_dir() -> Path:
    path = state_dir() / "logs"
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def cache_dir() -> Path:
    """The directory for things that are slow to make and safe to share: the engine build, the tiny model."""
    path = Path(os.environ.get("SANDSERVE_CACHE_DIR") or platformdirs.user_cache_dir("sandserve"))
    path.mkdir(parents=True, exist_ok=True)
    return path
