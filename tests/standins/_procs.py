"""Real local processes behind the stand-in's sandboxes.

Every command runs as `bash -c <command>` in its own process group, so killing a sandbox kills whatever its
commands left running in the background too. Output is read by two threads (stdout, stderr) into one list of
chunks in arrival order: that list gives the combined `output`, each stream alone, and the websocket log
stream. Two pipes cannot keep the exact order between stdout and stderr; `combined=True` uses one pipe.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO

STDOUT = 1
STDERR = 2


class CommandRun:
    """One running (or finished) command of a sandbox."""

    def __init__(
        self, command: str, argv: list[str], cwd: Path, env: dict[str, str], *, combined: bool = False
    ) -> None:
        """`combined`: stderr goes into the stdout pipe (as in the daemon's exec): their order is exact."""
        self.id = str(uuid.uuid4())
        self.command = command
        self.exit_code: int | None = None
        self.done = threading.Event()
        self._chunks: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if combined else subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self._proc.pid
        self.pgid = self._proc.pid  # start_new_session: the command leads its own group
        pipes = [(self._proc.stdout, STDOUT), (self._proc.stderr, STDERR)]
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, stream), daemon=True)
            for pipe, stream in pipes
            if pipe is not None
        ]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _read(self, pipe: IO[bytes], stream: int) -> None:
        with pipe:
            while data := pipe.read1(65536):  # type: ignore[attr-defined]
                with self._lock:
                    self._chunks.append((stream, data))

    def _wait(self) -> None:
        code = self._proc.wait()
        # A background child can hold the pipes open forever: give the readers a moment, not more.
        for reader in self._readers:
            reader.join(timeout=1.0)
        self.exit_code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell says
        self.done.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait (without blocking the event loop) until the command has ended; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def chunks_since(self, index: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._chunks[index:]

    def text(self, *streams: int) -> str:
        with self._lock:
            data = b"".join(chunk for stream, chunk in self._chunks if stream in streams)
        return data.decode("utf-8", errors="replace")

    @property
    def output(self) -> str:
        return self.text(STDOUT, STDERR)

    @property
    def stdout(self) -> str:
        return self.text(STDOUT)

    @property
    def stderr(self) -> str:
        return self.text(STDERR)


def live_pids(pgid: int) -> list[int]:
    """Processes of a group that are alive (zombies do not count: nobody may be left to reap them)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(entry.name))
    return pids


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_groups(pgids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM every live group, then SIGKILL what is still alive after `grace` seconds."""
    live = [pgid for pgid in set(pgids) if live_pids(pgid)]
    for pgid in live:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [pgid for pgid in live if live_pids(pgid)]
    for pgid in live:
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
