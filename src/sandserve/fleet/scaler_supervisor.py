"""The autoscaler's supervisor: the process ``fleet up`` starts (``python -m sandserve.fleet.scaler_process``)
runs the autoscaler itself as a child and starts it again when it dies (a crash, the OOM killer, a stray
``kill``), after ``restart_backoff`` seconds, doubled after each death that came soon after a start (up to a
minute). A zero-scaled fleet therefore does not stay dead.

The holder's listening socket and key belong to the supervisor and are handed to each autoscaler, so the
worker the gateway knows at zero stays the same across restarts. While no autoscaler runs, the supervisor
answers on that socket itself: every request is refused at once (424) with the cause and when a new
autoscaler starts, instead of waiting for a worker nobody boots. Its row says ``restarting`` meanwhile, and
the fleet shows ``degraded``.

When the supervisor itself is killed, the autoscaler notices at its next look and stops (taking down the
worker it was booting); the fleet shows ``degraded`` until ``fleet scale`` starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from aiohttp import web

from sandserve.fleet.hold import holder_socket, refusal
from sandserve.fleet.members import new_key
from sandserve.fleet.scaler_row import read_settings, scaler_handle
from sandserve.serve.ledger import Registry, State

log = logging.getLogger("sandserve.fleet.supervisor")
#: The environment variable that hands the holder's key to the autoscaler (never on a command line).
HOLDER_KEY_ENV = "SANDSERVE_HOLDER_KEY"
#: Exit codes with which the autoscaler says it is done on purpose (its fleet is down, its gateway died).
FINISHED = (0, 3)
#: An autoscaler that ran this long before dying is restarted after the first delay again.
STEADY_SECONDS = 300.0
MAX_RESTART_BACKOFF = 60.0


class Supervisor:
    def __init__(self, fleet_id: str, row_id: str, ledger: str) -> None:
        self.fleet_id = fleet_id
        self.row_id = row_id
        self.ledger = ledger
        self.registry = Registry(Path(ledger))
        self.sock = holder_socket()
        self.key = new_key()
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def run(self) -> int:
        restarts = 0
        delay = read_settings(self.row_id, self.registry).restart_backoff
        while not self.stopping:
            started = time.monotonic()
            code = self._run_child()
            if self.stopping or code in FINISHED:
                return 0 if self.stopping else code
            if self._fleet_down():
                return 0
            restarts += 1
            if time.monotonic() - started > STEADY_SECONDS:
                delay = read_settings(self.row_id, self.registry).restart_backoff
            reason = _exit_reason(code)
            log.error("the autoscaler %s; starting it again in %.1f s (restart %d)", reason, delay, restarts)
            self._mark_restarting(reason, delay, restarts)
            message = (
                f"The fleet's autoscaler {reason}; no worker is being started for this request. A new "
                f"autoscaler starts in {delay:.0f} s: send it again then (`sandserve fleet status "
                f"{self.fleet_id}` shows it)."
            )
            asyncio.run(_refuse_for(self.sock, message, delay))
            delay = min(max(delay * 2, 1.0), MAX_RESTART_BACKOFF)
        return 0

    def _run_child(self) -> int:
        argv = [sys.executable, "-m", "sandserve.fleet.scaler_process", "--child", str(self.sock.fileno())]
        env = {**os.environ, HOLDER_KEY_ENV: self.key}
        self.child = subprocess.Popen(
            [*argv, self.fleet_id, self.row_id, self.ledger], pass_fds=(self.sock.fileno(),), env=env
        )
        return self.child.wait()

    def _fleet_down(self) -> bool:
        row = self.registry.get(self.fleet_id)
        return row.state is State.DOWN

    def _mark_restarting(self, reason: str, delay: float, restarts: int) -> None:
        handle = scaler_handle(self.registry.get(self.row_id))
        handle.state = {
            **handle.state,
            "restarting": {"reason": reason, "at": time.time(), "delay_s": delay, "restarts": restarts},
        }
        self.registry.update(self.row_id, sandbox=handle)

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM (``down``, ``fleet scale`` replacing it): the autoscaler stops the way it always did."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        else:
            raise KeyboardInterrupt  # between two autoscalers: stop refusing and end


def _exit_reason(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def _refuse_for(sock: socket.socket, message: str, seconds: float) -> None:
    """Answer every request on the holder's socket with ``message`` for ``seconds``."""

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return refusal(message)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock.dup()).start()
    try:
        await asyncio.sleep(seconds)
    finally:
        await runner.cleanup()


def supervise(fleet_id: str, row_id: str, ledger: str) -> int:
    supervisor = Supervisor(fleet_id, row_id, ledger)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    try:
        return supervisor.run()
    except KeyboardInterrupt:
        return 0
