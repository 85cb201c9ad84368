"""The batch's own llama-server: low-priority requests are answered by a second llama-server, started when the
first of them comes, under Linux's ``SCHED_IDLE`` policy: a thread of any other policy that wants its core
takes it at once (the kernel's fair scheduler preempts an idle-policy task for any other on wakeup:
kernel/sched/fair.c, "Idle tasks are by definition preempted by non-idle tasks"). Where that policy is
refused, it runs at niceness 19.

Why a second process: one llama-server computes all its slots together, a step at a time, and never cuts
a step short; a person's request that comes during a batch's step waits for it, and then shares every step
with the batch's slots. Admission by priority in front of one llama-server (a slot kept for people, batch
requests stopped for them, batch prompts read a few tokens a step) still left a person's first token at
1.5x-2.7x its idle time beside a batch on 2 cores (README's Batch section). At niceness 19 instead of
``SCHED_IDLE``, a person's step still waited now and then for a batch thread holding a core (1.21x-2.03x
in three runs).

It costs memory only once a batch comes: the same model file, mapped into both processes, shares its pages;
the second process adds its own KV cache (the same slots and context as the first). If it cannot start, or
dies, low-priority requests go to the people's llama-server (the adapter says so on its log) until it starts
again. ``SANDSERVE_BATCH_NICE`` (0-19) runs it under the normal policy at that niceness instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import Callable, Mapping

from sandserve.engines.upstream import Upstream, die_with_the_adapter, start_llama_server, until_ready
from sandserve.errors import ConfigError

#: How long the batch's llama-server may take to load its model and answer (upstream.until_ready).
START_TIMEOUT_S = 300.0
#: Starts tried while the server exits before it answers: its private port, free when it was picked, may
#: have been taken by another process in the meantime.
START_TRIES = 3
#: After a failed start, how long low-priority requests go to the people's llama-server before another try.
RETRY_AFTER_S = 60.0
#: Its niceness where ``SCHED_IDLE`` is refused.
FALLBACK_NICE = 19
#: A niceness to run it at under the normal policy instead of ``SCHED_IDLE``.
BATCH_NICE_ENV = "SANDSERVE_BATCH_NICE"


def batch_niceness(environ: Mapping[str, str]) -> int | None:
    """The niceness ``BATCH_NICE_ENV`` asks for, or None: ``SCHED_IDLE``."""
    text = environ.get(BATCH_NICE_ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ConfigError(
            f"{BATCH_NICE_ENV} must be a niceness from 0 to 19 (got {text!r}).",
            hint="Unset it for the default: the batch's server then yields the cores to everything else.",
        )
    return value


def _runs_at(niceness: int | None) -> Callable[[], None]:
    def in_the_batch_servers_process() -> None:
        die_with_the_adapter()
        if niceness is None:
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                return
            except (OSError, AttributeError):  # not Linux
                pass
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, FALLBACK_NICE if niceness is None else niceness)

    return in_the_batch_servers_process


class BatchServer:
    """The second llama-server, started on first use; ``None`` from ``upstream`` while it cannot run."""

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        niceness: int | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.command = command
        self.env = dict(env)
        self.niceness = niceness
        self.start_timeout_s = start_timeout_s
        self._lock = asyncio.Lock()
        self._process: asyncio.subprocess.Process | None = None
        self._upstream: Upstream | None = None
        self._ready: Upstream | None = None
        """The upstream, once it has answered (until then, requests wait on the lock)."""
        self._refused_at: float | None = None

    @property
    def running(self) -> Upstream | None:
        """Its upstream if it is up and answering now (nothing is started)."""
        if self._process is not None and self._process.returncode is None:
            return self._ready
        return None

    async def upstream(self) -> Upstream | None:
        """The batch's llama-server, started if it is not running; None if it does not start (a request
        then goes to the people's llama-server; another start is tried ``RETRY_AFTER_S`` later)."""
        if (up := self.running) is not None:
            return up
        async with self._lock:
            if (up := self.running) is not None:
                return up
            loop = asyncio.get_running_loop()
            if self._refused_at is not None and loop.time() - self._refused_at < RETRY_AFTER_S:
                return None
            if self._process is not None:
                code = self._process.returncode
                _say(f"the batch's llama-server exited with code {code}; starting it again")
            for _ in range(START_TRIES):
                await self._close_upstream()
                process, upstream = await start_llama_server(
                    self.command, secrets.token_urlsafe(24), self.env, _runs_at(self.niceness)
                )
                self._process, self._upstream = process, upstream
                if await until_ready(process, upstream, self.start_timeout_s):
                    self._ready, self._refused_at = upstream, None
                    _say(f"the batch's llama-server is up on {upstream.base}")
                    return upstream
                if process.returncode is None:
                    break  # it runs but does not answer: another try would not do better
            await self.stop()
            self._refused_at = loop.time()
            _say(
                "the batch's llama-server did not start (its log is above); low-priority requests go to "
                "the main llama-server"
            )
            return None

    async def stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        await self._close_upstream()

    async def _close_upstream(self) -> None:
        self._ready = None
        if self._upstream is not None:
            await self._upstream.close()


def _say(text: str) -> None:
    sys.stderr.write(f"sandserve adapter: {text}\n")
    sys.stderr.flush()
