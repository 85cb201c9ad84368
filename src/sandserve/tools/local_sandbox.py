"""Tool calls on this machine, inside an OS-level boundary: bubblewrap (Linux namespaces).

Each call runs a fresh ``python -I`` in its own bubblewrap sandbox:
- it sees only what the call needs: the system (/usr, /etc and the /bin, /lib links) and the Python
  interpreter read-only, and its own temporary directory (its cwd, HOME and TMPDIR, removed after the call),
  the only writable place; nothing of the working directory, home, the sandserve state directory (the
  ledger holds tokens), /srv, /opt, /mnt or /tmp, unless the tool declares a path it needs
  (``@tool(paths=[...])``, read-only);
- an unprivileged user with no capabilities (as root, a fresh user id of its own per call, so root's files
  stay unreadable and its process count is the call's alone), and new PID, network (loopback only, nothing
  listening), IPC, UTS, cgroup and user namespaces; no further user namespace can be created inside;
- killed as a whole at the end: when the call's main process ends (or its wall-clock limit kills it), the
  PID namespace ends and the kernel kills every process left in it, a ``setsid`` child included;
- CPU, memory, file-size, open-file and process-count rlimits (set before the tool's code runs; no tool can
  raise them), and, where this machine lets sandserve create one, a pids cgroup of its own.
On top, an audit hook (refusing sockets, writes outside the folder, starting processes) is kept as an
extra layer: it guards Python code only, and the boundary does not depend on it.

Where bubblewrap is missing or cannot create namespaces, sandserve says so and refuses to run tools unless
the caller opts in (``allow_unisolated=True`` or SANDSERVE_ALLOW_UNISOLATED_TOOLS=1): then only the
subprocess, its rlimits, the audit hook and, where allowed, ``unshare --net`` stand in the way.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from sandserve.errors import ToolIsolationUnavailableError
from sandserve.tools.declaration import Tool
from sandserve.tools.outcome import ToolOutcome, last_error_line
from sandserve.tools.pids_cgroup import PidsCgroup

#: The environment variable that opts in to running tools without OS-level isolation.
ALLOW_UNISOLATED_ENV = "SANDSERVE_ALLOW_UNISOLATED_TOOLS"
#: The system, shown read-only inside the sandbox (a link such as /bin -> usr/bin stays a link).
SYSTEM_PATHS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Empty private folders inside the sandbox.
PRIVATE_FOLDERS = ("/tmp", "/var/tmp", "/run")
SANDBOX_UID = 65534  # nobody
#: Tasks of the sandbox's own (bubblewrap, its init, setpriv) on top of the tool's in its pids cgroup.
CGROUP_OVERHEAD = 8
#: Fresh user ids for calls run by root: far above any real account's, one drawn per call.
FRESH_UID_RANGE = (2_000_000_000, 2_100_000_000)

# Runs in the child with `python -I -B -c`: limits, then the audit hook, then the tool. It reads its job from
# stdin and writes one JSON line to the real stdout; the tool's own prints go to a buffer.
_BOOTSTRAP = r"""
import io, json, os, resource, sys, traceback
job = json.loads(sys.stdin.read())
ROOT = os.path.realpath(job["root"])
for limit, value in ((resource.RLIMIT_CPU, job["cpu_seconds"]), (resource.RLIMIT_AS, job["memory_bytes"]),
                     (resource.RLIMIT_FSIZE, job["file_bytes"]), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_NOFILE, job["open_files"]), (resource.RLIMIT_NPROC, job["processes"])):
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
def bubblewrap() -> str | None:
    """The bwrap binary, if it is installed and can create the namespaces the sandbox needs here."""
    binary = shutil.which("bwrap")
    if binary is None:
        return None
    probe = [binary, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return binary if done.returncode == 0 else None


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """The command prefix that runs a program in a new, empty network namespace here; () if none works.

    Used only without bubblewrap (an opted-in, unisolated run): as root ``unshare --net`` works; otherwise
    user namespaces may allow it."""
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


def bubblewrap_argv(
    binary: str, root: str, *, readable: tuple[str, ...] = (), fresh_uid: int | None = None
) -> list[str]:
    """The command line that confines one call to ``root`` (see the module docstring); ``readable`` are the
    paths the tool declared, shown read-only.

    As root, bwrap sets the sandbox up with its own privileges (so it can show an interpreter under /root),
    then ``setpriv`` becomes ``fresh_uid``, a user id nothing else runs as, and a second, unprivileged bwrap
    puts that user in a user namespace where no further one can be made (``--disable-userns``). As any
    other user, one bwrap does both. Either way the process-count limit counts this call's processes only.
    """
    setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
    argv = [binary, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    argv += ["--unshare-uts", "--unshare-cgroup-try"]
    if not setpriv:
        argv += [*_NO_NESTED_USER_NAMESPACES, "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--dev", "/dev", "--proc", "/proc"]
    for folder in PRIVATE_FOLDERS:
        argv += ["--tmpfs", folder]
    shown = _outermost([*_interpreter_trees(), *(os.path.realpath(path) for path in readable)])
    made = {"/", *SYSTEM_PATHS, "/dev", "/proc", *PRIVATE_FOLDERS}
    for path, how in [*((path, "--ro-bind") for path in shown), (root, "--bind")]:
        if how == "--ro-bind" and any(_under(path, system) for system in SYSTEM_PATHS):
            continue  # the system is there already
        for parent in _parents(path):
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", parent]  # bwrap's own would be 0700
        argv += [how, path, path]
    argv += ["--chdir", root]
    if setpriv:
        uid = str(fresh_uid if fresh_uid is not None else _fresh_uid())
        argv += ["--", setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
        argv += ["--", binary, *_NO_NESTED_USER_NAMESPACES, "--uid", uid, "--gid", uid, "--bind", "/", "/"]
    return argv


_NO_NESTED_USER_NAMESPACES = ("--unshare-user", "--disable-userns", "--cap-drop", "ALL")


def _fresh_uid() -> int:
    """A user id no account has, drawn at random (no running call shares it, short of a 1-in-10^8 draw)."""
    import pwd

    while True:
        uid = secrets.randbelow(FRESH_UID_RANGE[1] - FRESH_UID_RANGE[0]) + FRESH_UID_RANGE[0]
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid


def _interpreter_trees() -> list[str]:
    trees = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))]
    return [os.path.realpath(tree) for tree in trees]


def _outermost(paths: list[str]) -> list[str]:
    """``paths`` without those inside another of them (binding the outer one shows both), in order."""
    unique = list(dict.fromkeys(paths))
    return [path for path in unique if not any(other != path and _under(path, other) for other in unique)]


def _parents(path: str) -> list[str]:
    """Every folder above ``path``, outermost first, without ``/``."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: index + 1]) for index in range(len(parts))]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class LocalToolSandbox:
    """Tool calls in a bubblewrap sandbox on this machine (see the module docstring for what it holds)."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        memory_mb: int = 512,
        file_mb: int = 64,
        max_processes: int = 64,
        open_files: int = 256,
        allow_unisolated: bool | None = None,
        use_network_namespace: bool = True,
    ) -> None:
        """``allow_unisolated``: run tools even where no OS-level isolation is available (default: only
        when SANDSERVE_ALLOW_UNISOLATED_TOOLS=1); without it, such a machine raises
        ToolIsolationUnavailableError here, before any tool runs. ``max_processes`` bounds the processes
        (and threads) a call may have at once, the interpreter's own included."""
        self.timeout = timeout
        self.max_processes = max_processes
        self.open_files = open_files
        self.memory_bytes = memory_mb * 1024 * 1024
        self.file_bytes = file_mb * 1024 * 1024
        if allow_unisolated is None:
            allow_unisolated = os.environ.get(ALLOW_UNISOLATED_ENV) == "1"
        self._bwrap = bubblewrap()
        if self._bwrap is None and not allow_unisolated:
            raise ToolIsolationUnavailableError(ALLOW_UNISOLATED_ENV)
        self._prefix: tuple[str, ...] = ()
        if self._bwrap is None and use_network_namespace:
            self._prefix = network_namespace_prefix()

    @property
    def isolated(self) -> bool:
        return self._bwrap is not None

    @property
    def isolation(self) -> str:
        if self._bwrap is not None:
            return (
                "bubblewrap sandbox as an unprivileged user: read-only system, its own scratch folder, "
                "nothing of the working directory, home, state directory, /srv or /opt unless a tool "
                f"declares it, no network, at most {self.max_processes} processes, no user namespaces, its "
                "own PID namespace "
                "(all its processes end with the call); audit hook on top"
            )
        network = "network namespace (unshare --net)" if self._prefix else "no network namespace"
        return f"NOT ISOLATED (opted in): a local subprocess with rlimits, {network}, and an audit hook only"

    def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        root = tempfile.mkdtemp(prefix="sandserve-tool-")
        os.chmod(root, 0o777)  # the sandbox's own user writes here
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
                "open_files": self.open_files,
                "processes": self.max_processes,
            }
        )
        env = {"HOME": root, "TMPDIR": root, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        missing = [path for path in tool.paths if not os.path.exists(path)]
        if missing:
            return ToolOutcome.failure(
                f"{tool.name} declares {', '.join(missing)}, which does not exist on this machine"
            )
        if not self._bwrap:
            return self._call(tool, [*self._prefix], job, env, root)
        cgroup = PidsCgroup.create(self.max_processes + CGROUP_OVERHEAD)
        prefix = bubblewrap_argv(self._bwrap, root, readable=tool.paths)
        try:
            return self._call(tool, [*(cgroup.prefix() if cgroup else []), *prefix], job, env, root)
        finally:
            if cgroup is not None:
                cgroup.remove()

    def _call(self, tool: Tool, prefix: list[str], job: str, env: dict[str, str], root: str) -> ToolOutcome:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-B", "-c", _BOOTSTRAP],
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
            _kill_group(process)
            process.communicate()
            return ToolOutcome.failure(
                f"{tool.name} did not finish within {self.timeout:g} s and was stopped"
            )
        finally:
            _kill_group(process)  # whatever it started in its session ends with the call
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
    last_line = last_error_line(stderr) or "no output"
    return f"{name} ended (exit code {returncode}) without a result: {last_line}"


__all__ = ["LocalToolSandbox", "bubblewrap", "network_namespace_prefix"]
