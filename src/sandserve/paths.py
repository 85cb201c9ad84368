"""Where sandserve keeps things: the state directory (ledger, logs) and the cache (engine build, tiny model).

Both follow the platform's conventions and can be moved with SANDSERVE_STATE_DIR and SANDSERVE_CACHE_DIR,
which is how tests keep away from the user's own ledger.
"""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

from sandserve.errors import StateDirError


def state_dir() -> Path:
    """The directory holding the ledger and server logs, created (mode 0700) if missing."""
    path = Path(os.environ.get("SANDSERVE_STATE_DIR") or _platform_dir("state"))
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StateDirError(path, exc.strerror or str(exc)) from exc
    if path not in _WRITABLE:
        error = write_error(path)
        if error is not None:
            raise StateDirError(path, error.strerror or str(error))
        _WRITABLE.add(path)
    return path


#: State directories this process found writable: probed once each (a probe writes and syncs a file).
_WRITABLE: set[Path] = set()


#: Numbers the probe files of this process (threads may probe at once).
_PROBES = itertools.count()

#: Less free space than this is a full disk for a directory sandserve is about to write in.
LOW_SPACE_BYTES = 1 << 20

#: What to do about the system's causes a user can act on.
_ADVICE = {
    errno.EROFS: "That file system is mounted read-only: write to a place on a writable one.",
    errno.ENOSPC: "The disk is full: free some space (df -h shows it), or write to another disk.",
    errno.EDQUOT: "Your disk quota is used up: remove files you do not need, or write to another disk.",
    errno.EACCES: "You may not write there: pick a directory you own, or change its permissions.",
    errno.EPERM: "You may not write there: pick a directory you own, or change its permissions.",
}


def write_error(directory: Path) -> OSError | None:
    """What the system answers when a file is written in ``directory`` (a read-only file system, a
    permission, a full disk), or None when one can be. It writes and removes a one-byte file to find out,
    since permission bits alone show neither a read-only mount nor a full disk."""
    probe = directory / f".sandserve-probe-{os.getpid()}-{next(_PROBES)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        # shutil.disk_usage's own sum, without importing shutil (and its archive codecs) on every verb.
        stats = os.statvfs(directory)
        free = stats.f_bavail * stats.f_frsize
    except OSError as error:
        return error
    if free < LOW_SPACE_BYTES:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free:,} bytes free)")
    return None


def advice_for(error: OSError) -> str | None:
    """What to do about ``error`` when the system's cause is one a user can act on; else None."""
    return _ADVICE.get(error.errno or 0)


def logs_dir() -> Path:
    path = state_dir() / "logs"
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def cache_dir() -> Path:
    """The directory for things that are slow to make and safe to share: the engine build, the tiny model."""
    path = Path(os.environ.get("SANDSERVE_CACHE_DIR") or _platform_dir("cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _platform_dir(kind: str) -> str:
    """The platform's own state or cache directory for sandserve (platformdirs: loaded only when asked)."""
    import platformdirs

    return (
        platformdirs.user_state_dir("sandserve")
        if kind == "state"
        else platformdirs.user_cache_dir("sandserve")
    )
