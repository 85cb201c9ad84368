"""The local provider: the server runs as a detached process on this machine, on 127.0.0.1.

The process gets its own process group (so stopping it stops everything it started) and keeps serving after
`sandserve up` returns. It is recognised later by pid and start time, so a recycled pid never passes for it.

Auth works as on Daytona, so the guide's clients run unchanged after `eval "$(sandserve up)"`: in token mode (the
default) every request must carry the endpoint's token in the ``x-daytona-preview-token`` header (the engine's
front, llamacpp_adapter.py, checks it; the token reaches it through its environment); in key mode the engine
checks ``Authorization: Bearer``; public is public. A signed URL is a Daytona proxy feature: refused here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sandserve.endpoint import PREVIEW_TOKEN_HEADER
from sandserve.engines.base import Launch
from sandserve.engines.llamacpp_adapter import ACCESS_TOKEN_ENV
from sandserve.errors import ConfigError, PortInUseError
from sandserve.paths import logs_dir
from sandserve.providers.base import Exposure, Provider, SandboxHandle
from sandserve.providers.colocated import ColocatedJob, ColocatedOutcome, OnOutput, run_on_this_machine
from sandserve.spec import AuthMode, ServeSpec

HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (connections of a stopped server in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies waiting to be reaped do not count)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat_file.parent.name))
    return members


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_time = fields[0], fields[19]
    return None if state in ("Z", "X") else start_time


class LocalProvider(Provider):
    name = "local"
    poll_interval = 0.1
    keeps_failed_sandboxes = False
    python_command = shlex.quote(sys.executable)  # this environment's Python: it has the openai package

    def run_colocated(
        self, handle: SandboxHandle, job: ColocatedJob, on_output: OnOutput
    ) -> ColocatedOutcome:
        return run_on_this_machine(job, on_output)

    def __init__(self) -> None:
        # Children started by this process: only their parent can read their exit code.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def preflight(self, spec: ServeSpec) -> list[str] | None:
        if spec.auth is AuthMode.SIGNED:
            raise ConfigError(
                "A signed URL is a feature of Daytona's preview proxy; a local endpoint cannot have one.",
                hint="Locally use --auth token (the default: clients send $TOKEN in the x-daytona-preview-token "
                "header), --auth key (Authorization: Bearer) or --auth public.",
            )
        if spec.port is not None and not port_is_free(spec.port):
            raise PortInUseError(spec.port)
        return None

    def create(self, spec: ServeSpec, endpoint_id: str) -> SandboxHandle:
        self.preflight(spec)
        port = spec.port or free_port()
        log_path = logs_dir() / f"{endpoint_id}.log"
        data: dict[str, object] = {"port": port, "log_path": str(log_path)}
        if spec.auth is AuthMode.TOKEN:
            data["token"] = secrets.token_urlsafe(24)
        return SandboxHandle(self.name, endpoint_id, data)

    def server_port(self, handle: SandboxHandle) -> int:
        return int(handle.data["port"])

    def start(self, handle: SandboxHandle, launch: Launch) -> None:
        log_path = Path(handle.data["log_path"])
        env = {**os.environ, **launch.env}
        env.pop(ACCESS_TOKEN_ENV, None)
        if handle.data.get("token"):
            env[ACCESS_TOKEN_ENV] = str(handle.data["token"])
        # An interrupt between the spawn and the bookkeeping would leave a server nobody knows the pid of:
        # hold interrupts back until the pid is recorded (the child itself starts with them unblocked).
        with open(log_path, "ab") as log, _interrupts_deferred():
            os.chmod(log_path, 0o600)
            process = subprocess.Popen(
                launch.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=log_path.parent,
                preexec_fn=_unblock_interrupts,
            )
            self._children[handle.sandbox_id] = process
            handle.data.update(pid=process.pid, start_time=process_start_time(process.pid))

    def read_log(self, handle: SandboxHandle) -> str:
        try:
            return Path(handle.data["log_path"]).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def exit_code(self, handle: SandboxHandle) -> int | None:
        child = self._children.get(handle.sandbox_id)
        if child is not None:
            return child.poll()
        return None if self.is_running(handle) else -1

    def expose(self, handle: SandboxHandle, spec: ServeSpec) -> Exposure:
        token = handle.data.get("token")
        headers = {PREVIEW_TOKEN_HEADER: str(token)} if token else {}
        return Exposure(
            url=f"http://{HOST}:{self.server_port(handle)}", headers=headers, api_key=spec.api_key
        )

    def is_running(self, handle: SandboxHandle) -> bool:
        pid = handle.data.get("pid")
        if pid is None:
            return False
        child = self._children.get(handle.sandbox_id)
        if child is not None and child.poll() is not None:
            return False
        started = process_start_time(pid)
        return started is not None and started == handle.data.get("start_time")

    def delete(self, handle: SandboxHandle) -> None:
        """Stop the server and everything it started (its whole process group), also when the group's leader
        died first and left children running (a pid is not reused while its process group still exists)."""
        pid = handle.data.get("pid")
        if not self.is_running(handle) and not (pid and live_group_members(int(pid))):
            self._reap(handle)
            return
        pgid = int(handle.data["pid"])
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _signal_group(pgid, sig)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while live_group_members(pgid) and time.monotonic() < deadline:
                self._reap(handle)
                time.sleep(0.05)
            if not live_group_members(pgid):
                break
        self._reap(handle)

    def _reap(self, handle: SandboxHandle) -> None:
        child = self._children.get(handle.sandbox_id)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.05)


_INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _unblock_interrupts() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
