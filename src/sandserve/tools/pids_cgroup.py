"""A pids cgroup of its own for one tool call, where this machine lets sandserve make one.

On top of the process-count rlimit (which the kernel counts per user): the cgroup counts every task the call
has, threads included, whoever they run as. It is made under the current ``pids`` cgroup (cgroup v1, or v2
where the pids controller is enabled for children); as a user without the right to make cgroups, or where
the controller is absent, there is none and the rlimit alone holds.

The call's first process moves itself in before it starts bubblewrap (``prefix``), so nothing of the call
runs outside it; the folder is removed after the call.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


class PidsCgroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, limit: int) -> PidsCgroup | None:
        """A new cgroup allowing ``limit`` tasks, or None where none can be made here."""
        for parent in _parents():
            path = parent / f"sandserve-tool-{secrets.token_hex(6)}"
            try:
                path.mkdir()
            except OSError:
                continue
            try:
                (path / "pids.max").write_text(str(limit))
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            return cls(path)
        return None

    def prefix(self) -> list[str]:
        """The command prefix that moves the call's first process into the cgroup, then runs the rest."""
        procs = self.path / "cgroup.procs"
        return ["/bin/sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sandserve-tool"]

    def remove(self, wait_s: float = 2.0) -> None:
        """Remove the folder once its tasks are gone (the kernel refuses while any is left)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # a task still exiting: an empty cgroup left behind costs nothing
                time.sleep(0.02)


def _parents() -> list[Path]:
    """Where a child cgroup with the pids controller can go: this process's own pids cgroup (v1), or its v2
    cgroup where ``pids`` is enabled for children."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, where = line.split(":", 2)
        relative = where.lstrip("/")
        if "pids" in controllers.split(","):
            found.append(CGROUP_ROOT / "pids" / relative)
        elif controllers == "":
            for mount in (CGROUP_ROOT / "unified", CGROUP_ROOT):
                base = mount / relative
                with contextlib.suppress(OSError):
                    if "pids" in (base / "cgroup.subtree_control").read_text().split():
                        found.append(base)
                        break
    return [path for path in found if os.access(path, os.W_OK)]
