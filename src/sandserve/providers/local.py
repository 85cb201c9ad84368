"""The local provider: the server runs as a detached process on this machine, on 127.0.0.1.

The process gets its own process group (so stopping it stops everything it started) and keeps serving after
`sandserve up` returns. It is recognised later by pid and start time, so a recycled pid never passes for it.

Auth works as on Daytona, so the guide's clients run unchanged after `eval "$(sandserve up)"`: in token mode
(the default) every request must carry the endpoint's token in the ``x-daytona-preview-token`` header (the
engine's front, llamacpp_adapter.py, checks it; the token reaches it through its environment); in key mode the
engine checks ``Authorization: Bearer``; public is public. A signed URL is a Daytona proxy feature: refused
here.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sandserve.defaults import DEFAULT_LOCAL_PRESET
from sandserve.errors import ConfigError, PortInUseError
from sandserve.paths import logs_dir
from sandserve.processes import live_processes
from sandserve.providers.base import Exposure, Provider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER, PROBE_HEADERS
from sandserve.providers.handles import LocalHandle

if TYPE_CHECKING:  # what `ls` and `status` never touch is loaded by the methods that use it
    from sandserve.endpoint import Endpoint
    from sandserve.engines.base import Engine, Launch
    from sandserve.providers.colocated import ColocatedJob, ColocatedOutcome, InsideAccess, OnOutput
    from sandserve.providers.detached import DetachedServer
    from sandserve.spec import ServeSpec

HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 5.0
#: A local model loads in seconds; a GPU boot downloads and loads weights and captures CUDA graphs (minutes).
LOCAL_BOOT_TIMEOUT = 120.0


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (connections of a stopped server in TIME_WAIT do not
    count)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies waiting to be reaped do not count)."""
    return [pid for pid, _, fields in live_processes() if int(fields[2]) == pgid]


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if there is no such live
    process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_time = fields[0], fields[19]
    return None if state in ("Z", "X") else start_time


class LocalProvider(Provider[LocalHandle]):
    name = "local"
    poll_interval = 0.1
    keeps_failed_sandboxes = False
    bind_host = HOST
    remote = False
    default_boot_timeout = LOCAL_BOOT_TIMEOUT
    default_preset = DEFAULT_LOCAL_PRESET
    handle_type = LocalHandle
    offers_gpus = False
    # Daytona's preview proxy, emulated: its token header (the adapter checks it) and the probes' headers.
    token_header = PREVIEW_TOKEN_HEADER
    probe_headers = PROBE_HEADERS
    python_command = shlex.quote(sys.executable)  # this environment's Python: it has the openai package

    def run_colocated(self, handle: LocalHandle, job: ColocatedJob, on_output: OnOutput) -> ColocatedOutcome:
        from sandserve.providers.colocated import run_on_this_machine

        return run_on_this_machine(job, on_output)

    def inside_access(self, handle: LocalHandle, served: Endpoint) -> InsideAccess:
        # Code beside a token-mode server holds the token (the guide's clients send it) and a key of its own,
        # so the OpenAI SDK reaches the server unchanged, as it would from inside a Daytona sandbox.
        from sandserve.providers.colocated import InsideAccess

        return InsideAccess(served.url, served.api_key or handle.inside_key, handle.token or "")

    def __init__(self) -> None:
        # Children started by this process: only their parent can read their exit code.
        self._children: dict[str, DetachedServer] = {}

    @classmethod
    def check_engine(cls, engine: type[Engine], model: str) -> None:
        if not engine.runs_on_cpu:
            raise ConfigError(
                f"{model!r} is served with {engine.name}, which needs a GPU sandbox.",
                hint="Use --provider daytona (with DAYTONA_API_KEY set), or locally give a .gguf file or the "
                f"'{DEFAULT_LOCAL_PRESET}' preset.",
            )

    def preflight(self, spec: ServeSpec) -> list[str] | None:
        from sandserve.spec import AuthMode

        if spec.auth is AuthMode.SIGNED:
            raise ConfigError(
                "A signed URL is a feature of Daytona's preview proxy; a local endpoint cannot have one.",
                hint="Locally use --auth token (the default: clients send $TOKEN in the "
                "x-daytona-preview-token header), --auth key (Authorization: Bearer) or --auth public.",
            )
        if spec.port is not None and not port_is_free(spec.port):
            raise PortInUseError(spec.port)
        return None

    def create(self, spec: ServeSpec, endpoint_id: str) -> LocalHandle:
        self.preflight(spec)
        port = spec.port or free_port()
        import secrets

        from sandserve.spec import AuthMode

        log_path = logs_dir() / f"{endpoint_id}.log"
        token = secrets.token_urlsafe(24) if spec.auth is AuthMode.TOKEN else None
        inside_key = secrets.token_urlsafe(24) if token else None
        return LocalHandle(
            self.name, endpoint_id, port=port, log_path=str(log_path), token=token, inside_key=inside_key
        )

    def server_port(self, handle: LocalHandle) -> int:
        if handle.port is None:
            raise _not_ours(handle, "port")
        return handle.port

    def start(self, handle: LocalHandle, launch: Launch) -> None:
        if handle.log_path is None:
            raise _not_ours(handle, "log_path")
        log_path = Path(handle.log_path)
        # Here, not at the top: the adapter's module imports aiohttp, and `ls` reads the ledger through this
        # one (as it does subprocess).
        import subprocess

        from sandserve.engines.llamacpp_adapter import ACCESS_TOKEN_ENV, INSIDE_KEY_ENV, TOKEN_HEADER_ENV
        from sandserve.providers.detached import DetachedServer

        env = {**os.environ, **launch.env}
        header = self.token_header if handle.token else None
        for name, value in (
            (ACCESS_TOKEN_ENV, handle.token),
            (TOKEN_HEADER_ENV, header),
            (INSIDE_KEY_ENV, handle.inside_key),
        ):
            env.pop(name, None)
            if value:
                env[name] = value
        # An interrupt between the spawn and the bookkeeping would leave a server nobody knows the pid of:
        # hold interrupts back until the pid is recorded (the child itself starts with them unblocked).
        with open(log_path, "ab") as log, _interrupts_deferred():
            os.chmod(log_path, 0o600)
            process = DetachedServer(
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
            handle.pid, handle.start_time = process.pid, process_start_time(process.pid)

    def read_log(self, handle: LocalHandle) -> str:
        if handle.log_path is None:
            return ""
        try:
            return Path(handle.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def exit_code(self, handle: LocalHandle) -> int | None:
        child = self._children.get(handle.sandbox_id)
        if child is not None:
            return child.poll()
        return None if self.is_running(handle) else -1

    def expose(self, handle: LocalHandle, spec: ServeSpec) -> Exposure:
        header = self.token_header if handle.token else None
        return Exposure(
            url=f"http://{HOST}:{self.server_port(handle)}",
            headers={header: handle.token} if header and handle.token else {},
            api_key=spec.api_key,
            probe_headers=dict(self.probe_headers),
            token_header=header,
        )

    def is_running(self, handle: LocalHandle) -> bool:
        if handle.pid is None:
            return False
        child = self._children.get(handle.sandbox_id)
        if child is not None and child.poll() is not None:
            return False
        started = process_start_time(handle.pid)
        return started is not None and started == handle.start_time

    def delete(self, handle: LocalHandle) -> None:
        """Stop the server and everything it started (its whole process group), also when the group's leader
        died first and left children running (a pid is not reused while its process group still exists)."""
        pid = handle.pid
        if pid is None or (not self.is_running(handle) and not live_group_members(pid)):
            self._reap(handle)
            return
        pgid = pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _signal_group(pgid, sig)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while live_group_members(pgid) and time.monotonic() < deadline:
                self._reap(handle)
                time.sleep(0.05)
            if not live_group_members(pgid):
                break
        self._reap(handle)

    def _reap(self, handle: LocalHandle) -> None:
        child = self._children.get(handle.sandbox_id)
        if child is not None:
            import subprocess

            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.05)


def _not_ours(handle: LocalHandle, name: str) -> ValueError:
    return ValueError(f"{handle.sandbox_id}: the handle has no {name}; only LocalProvider.create makes one")


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
