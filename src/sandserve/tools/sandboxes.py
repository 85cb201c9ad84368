"""Where a model's tool calls run: never in the caller's process.

- ``DaytonaToolSandbox`` (endpoints on Daytona): one ephemeral CPU sandbox, created on the first call,
  labelled as sandserve's tool sandbox for that endpoint, network blocked, running each call with
  ``process.code_run``; deleted on ``close()``. This is the real isolation boundary: a separate machine.
- ``LocalToolSandbox`` (local endpoints): a fresh ``python -I`` subprocess per call, in its own temporary
  directory (its cwd, HOME and TMPDIR), in its own process group, killed at a wall-clock limit, with CPU,
  memory and file-size rlimits. Network: a new, empty network namespace (``unshare --net``) where this machine
  allows it. On top, an audit hook installed before the tool's code runs refuses sockets (connect, bind, DNS),
  writes, deletes, renames and mkdirs outside the temp directory, and starting processes. The hook guards
  Python code only: it is NOT a security boundary against native code (ctypes is refused, but C extensions are
  not); the namespace and the Daytona sandbox are the real boundaries.

A tool's failure (a crash, bad arguments, a limit hit) is an outcome, not an exception: its text goes back to
the model as the tool message, which is how the standard loop lets a model recover.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Protocol, Self

from sandserve.errors import ToolSandboxError
from sandserve.tools.declaration import Tool

RESULT_MARKER = "__sandserve_tool_result__"
MAX_RESULT_CHARS = 16_000


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    content: str
    """What the model gets as the tool message: the result (JSON unless a string), or the error's text."""

    @classmethod
    def success(cls, value: Any) -> ToolOutcome:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return cls(True, _clip(text))

    @classmethod
    def failure(cls, message: str) -> ToolOutcome:
        return cls(False, _clip(f"error: {message}"))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " [truncated]"


class ToolRunner(Protocol):
    """Runs one tool call somewhere isolated. Use as a context manager: ``close()`` releases what it holds."""

    @property
    def isolation(self) -> str: ...

    def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def tool_program(tool: Tool, arguments: dict[str, Any]) -> str:
    """A standalone Python program that calls the tool once and prints the outcome as JSON on a marked line
    (on stdout, since that is what a remote runner returns; a traceback would go to stderr)."""
    return (
        f"{tool.source}\n"
        "import json as _sandserve_json, traceback as _sandserve_traceback\n"
        "try:\n"
        f"    _sandserve_args = _sandserve_json.loads({json.dumps(arguments)!r})\n"
        f"    _sandserve_answer = {{'ok': True, 'value': {tool.name}(**_sandserve_args)}}\n"
        "except BaseException as _sandserve_exc:\n"
        "    _sandserve_answer = {'ok': False, 'error': ''.join(\n"
        "        _sandserve_traceback.format_exception_only(type(_sandserve_exc), _sandserve_exc)).strip()}\n"
        f"print({RESULT_MARKER!r} + _sandserve_json.dumps(_sandserve_answer, default=str))\n"
    )


def _outcome_from_output(output: str, exit_code: int | None) -> ToolOutcome:
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARKER):
            answer = json.loads(line[len(RESULT_MARKER) :])
            if answer.get("ok"):
                return ToolOutcome.success(answer.get("value"))
            return ToolOutcome.failure(str(answer.get("error")))
    reason = _last_error_line(output) or f"the tool exited with code {exit_code} and no result"
    return ToolOutcome.failure(reason)


def _last_error_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# --- Daytona ------------------------------------------------------------------------------------------------

LABEL_ROLE = "sandserve.role"
LABEL_TOOLS_FOR = "sandserve.tools-for"


class DaytonaToolSandbox:
    """Tool calls in a Daytona CPU sandbox (created on first use, deleted by ``close()``)."""

    isolation = "Daytona CPU sandbox (separate machine, network blocked)"

    def __init__(
        self,
        endpoint_id: str | None = None,
        *,
        client: Any = None,
        timeout: float = 30.0,
        allow_network: bool = False,
        auto_stop_minutes: int = 15,
    ) -> None:
        """``auto_stop_minutes``: the sandbox is ephemeral, so if this process dies before ``close()``,
        Daytona stops, and so deletes, it after that much idle time."""
        self.endpoint_id = endpoint_id or "none"
        self.timeout = timeout
        self.allow_network = allow_network
        self.auto_stop_minutes = auto_stop_minutes
        self._client = client
        self._sandbox: Any = None

    @property
    def sandbox_id(self) -> str | None:
        return self._sandbox.id if self._sandbox is not None else None

    def _daytona(self) -> Any:
        if self._client is None:
            from sandserve.providers import get_provider

            self._client = get_provider("daytona").client  # type: ignore[attr-defined]
        return self._client

    def _ensure_sandbox(self) -> Any:
        if self._sandbox is not None:
            return self._sandbox
        from daytona import CreateSandboxFromSnapshotParams, DaytonaError

        params = CreateSandboxFromSnapshotParams(
            language="python",
            ephemeral=True,
            auto_stop_interval=self.auto_stop_minutes,
            network_block_all=not self.allow_network,
            labels={"sandserve": "1", LABEL_ROLE: "tools", LABEL_TOOLS_FOR: self.endpoint_id},
        )
        try:
            self._sandbox = self._daytona().create(params, timeout=120)
        except DaytonaError as exc:
            raise ToolSandboxError(f"creating the CPU sandbox failed ({exc})") from exc
        return self._sandbox

    def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        from daytona import DaytonaError, DaytonaTimeoutError
        from daytona_toolbox_api_client.exceptions import ApiException

        sandbox = self._ensure_sandbox()
        stopped = ToolOutcome.failure(f"{tool.name} did not finish within {self.timeout:g} s and was stopped")
        try:
            program = tool_program(tool, arguments)
            response = sandbox.process.code_run(program, timeout=math.ceil(self.timeout))
        except DaytonaTimeoutError:
            return stopped
        except ApiException as exc:
            # code_run (SDK 0.226) lets the toolbox client's own exception through, unlike the other calls.
            if exc.status == 408:
                return stopped
            raise ToolSandboxError(
                f"running {tool.name} in sandbox {sandbox.id} failed ({exc.status}: {exc.reason})"
            ) from exc
        except DaytonaError as exc:
            raise ToolSandboxError(f"running {tool.name} in sandbox {sandbox.id} failed ({exc})") from exc
        return _outcome_from_output(response.result or "", response.exit_code)

    def close(self) -> None:
        if self._sandbox is None:
            return
        from daytona import DaytonaError

        sandbox, self._sandbox = self._sandbox, None
        try:
            self._daytona().delete(sandbox, timeout=60)
        except DaytonaError as exc:
            raise ToolSandboxError(
                f"deleting the tool sandbox {sandbox.id} failed ({exc}); it is ephemeral and stops (and is "
                f"deleted) after {self.auto_stop_minutes} idle minutes"
            ) from exc

    def __enter__(self) -> DaytonaToolSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- local --------------------------------------------------------------------------------------------------

# Runs in the child with `python -I -B -c`: limits, then the audit hook, then the tool. It reads its job from
# stdin and writes one JSON line to the real stdout; the tool's own prints go to a buffer.
_BOOTSTRAP = r"""
import io, json, os, resource, sys, traceback
job = json.loads(sys.stdin.read())
ROOT = os.path.realpath(job["root"])
for limit, value in ((resource.RLIMIT_CPU, job["cpu_seconds"]), (resource.RLIMIT_AS, job["memory_bytes"]),
                     (resource.RLIMIT_FSIZE, job["file_bytes"]), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
result_channel = sys.stdout
sys.stdout = io.StringIO()

NETWORK = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
           "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo"}
PROCESSES = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
             "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "ctypes.dlopen", "resource.setrlimit",
             "resource.prlimit"}
# event -> positions of the path arguments that must stay inside ROOT
PATHS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
         "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,), "os.truncate": (0,),
         "os.mkfifo": (0,), "os.mknod": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
         "os.chflags": (0,), "os.lchflags": (0,), "shutil.rmtree": (0,)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

def inside(path):
    if path is None or isinstance(path, int):
        return True  # an already-open descriptor
    real = os.path.realpath(os.fsdecode(path))
    return real == ROOT or real.startswith(ROOT + os.sep) or real == "/dev/null"

def refuse(what):
    raise PermissionError(f"blocked by the sandserve tool sandbox: {what}")

def hook(event, args):
    if event in NETWORK:
        refuse(f"network access ({event})")
    if event in PROCESSES:
        refuse(f"{event} is not allowed in a tool")
    if event == "open":
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
        if writing and not inside(path):
            refuse(f"writing {path!r} (outside the tool's own directory {ROOT})")
    elif event in PATHS:
        for index in PATHS[event]:
            if index < len(args) and not inside(args[index]):
                refuse(f"{event} on {args[index]!r} (outside the tool's own directory {ROOT})")

sys.addaudithook(hook)
try:
    namespace = {"__name__": "sandserve_tool"}
    exec(compile(job["source"], "<tool " + job["name"] + ">", "exec"), namespace)
    value = namespace[job["name"]](**job["arguments"])
    answer = {"ok": True, "value": value}
except BaseException as exc:
    answer = {"ok": False, "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()}
try:
    text = json.dumps(answer, default=str)
except (TypeError, ValueError) as exc:
    text = json.dumps({"ok": False, "error": f"the result is not JSON-serialisable: {exc}"})
result_channel.write(text + "\n")
result_channel.flush()
"""


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """The command prefix that runs a program in a new, empty network namespace here; () if none works.

    Checked once per process: as root ``unshare --net`` works; otherwise user namespaces may allow it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for prefix in ((unshare, "--net", "--"), (unshare, "--user", "--map-root-user", "--net", "--")):
        try:
            done = subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return ()


class LocalToolSandbox:
    """Tool calls in a restricted subprocess on this machine (see the module docstring for what it holds)."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        memory_mb: int = 512,
        file_mb: int = 64,
        use_network_namespace: bool = True,
    ) -> None:
        self.timeout = timeout
        self.memory_bytes = memory_mb * 1024 * 1024
        self.file_bytes = file_mb * 1024 * 1024
        self._prefix = network_namespace_prefix() if use_network_namespace else ()

    @property
    def isolation(self) -> str:
        network = "network namespace (unshare --net)" if self._prefix else "no network namespace here"
        return (
            f"local subprocess: own temp dir, rlimits, {network}, audit hook (a guard for Python code only)"
        )

    def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        root = tempfile.mkdtemp(prefix="sandserve-tool-")
        try:
            return self._run_in(root, tool, arguments)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _run_in(self, root: str, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        job = json.dumps(
            {
                "root": root,
                "source": tool.source,
                "name": tool.name,
                "arguments": arguments,
                "cpu_seconds": max(1, math.ceil(self.timeout)) + 1,
                "memory_bytes": self.memory_bytes,
                "file_bytes": self.file_bytes,
            }
        )
        env = {"HOME": root, "TMPDIR": root, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        process = subprocess.Popen(
            [*self._prefix, sys.executable, "-I", "-B", "-c", _BOOTSTRAP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=root,
            env=env,
            start_new_session=True,
            text=True,
        )
        try:
            stdout, stderr = process.communicate(job, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)  # its whole group: the child cannot leave anything running behind
            process.communicate()
            return ToolOutcome.failure(
                f"{tool.name} did not finish within {self.timeout:g} s and was stopped"
            )
        lines = stdout.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return ToolOutcome.failure(_death_reason(tool.name, process.returncode, stderr))
        if answer.get("ok"):
            return ToolOutcome.success(answer.get("value"))
        return ToolOutcome.failure(str(answer.get("error")))

    def close(self) -> None:
        """Nothing is held between calls."""

    def __enter__(self) -> LocalToolSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _death_reason(name: str, returncode: int | None, stderr: str) -> str:
    if returncode is not None and returncode < 0:
        signame = signal.Signals(-returncode).name
        why = {
            "SIGXCPU": "it used up its CPU time limit",
            "SIGKILL": "it was killed (memory or time limit)",
            "SIGXFSZ": "it wrote past its file-size limit",
        }.get(signame, f"it was killed by {signame}")
        return f"{name} stopped: {why}"
    last_line = _last_error_line(stderr) or "no output"
    return f"{name} ended (exit code {returncode}) without a result: {last_line}"


def tool_runner_for(endpoint: Any, **options: Any) -> ToolRunner:
    """The runner that fits where the endpoint runs: its own Daytona CPU sandbox, or a local subprocess."""
    if getattr(endpoint, "provider", None) == "daytona":
        return DaytonaToolSandbox(endpoint.id, **options)
    return LocalToolSandbox(**options)
