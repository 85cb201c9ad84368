"""The local tool sandbox is a boundary: each escape that beat the audit hook alone fails under bubblewrap,
and leaves nothing behind (no file outside, no process after the call)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import poll_until

from sandserve.cli._app import exit_code_for
from sandserve.errors import ToolIsolationUnavailableError
from sandserve.tools import local_sandbox, pids_cgroup
from sandserve.tools.declaration import tool
from sandserve.tools.local_sandbox import CGROUP_OVERHEAD, LocalToolSandbox, bubblewrap
from sandserve.tools.outcome import ToolOutcome
from sandserve.tools.pids_cgroup import PidsCgroup

pytestmark = pytest.mark.skipif(
    bubblewrap() is None, reason="bubblewrap is not usable here (`make engine` installs it as root)"
)

#: A folder every process can see (not under /tmp or a home directory, which the sandbox replaces).
VISIBLE_ROOT = Path(__file__).resolve().parent


# --- the escapes, as a model could write them (module level: their source travels) --------------------------


def writes_through_dir_fd(folder: str) -> str:
    """os.open relative to a directory descriptor: the hook sees a relative path and lets it through."""
    import os

    directory = os.open(folder, os.O_RDONLY)
    handle = os.open("escaped.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=directory)
    os.write(handle, b"escaped")
    return "wrote"


def writes_with_sqlite(folder: str) -> str:
    """sqlite3 opens its file in C, where no audit event sees the path."""
    import sqlite3

    db = sqlite3.connect(folder + "/escaped.db")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    return "wrote"


def rewrites_the_hooks_state(folder: str) -> str:
    """Replaces the hook's own path check and empties its lists, then writes outside."""
    import __main__

    __main__.inside = lambda path: True
    __main__.NETWORK = set()
    __main__.PROCESSES = set()
    with open(folder + "/escaped.txt", "w") as handle:
        handle.write("escaped")
    return "wrote"


def connects_after_rewriting_the_hook(port: int) -> str:
    """With the hook's network list emptied, only the network namespace stands in the way."""
    import socket

    import __main__

    __main__.NETWORK = set()
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return "connected"


def signals_outside(pid: int) -> str:
    """Tries to stop a process outside the sandbox (the hook's list emptied first)."""
    import os
    import signal

    import __main__

    __main__.PROCESSES = set()
    os.kill(pid, signal.SIGTERM)
    return "signalled"


def forks_with_posixsubprocess(folder: str, marker: str) -> str:
    """_posixsubprocess.fork_exec raises no audit event: a shell that writes outside, then lingers."""
    import _posixsubprocess
    import os

    read_end, write_end = os.pipe()
    command = f"echo escaped > {folder}/forked.txt; exec sleep 300 {marker}".encode()
    _posixsubprocess.fork_exec(
        [b"/bin/sh", b"-c", command], [b"/bin/sh"], True, (write_end,), None, None,
        -1, -1, -1, -1, -1, -1, read_end, write_end, True, False, -1, None, None, None, -1, None, False,
    )  # fmt: skip
    os.close(write_end)
    os.read(read_end, 100)  # the exec happened
    import time

    time.sleep(0.5)  # give the shell time to try its write
    return "forked"


def leaves_a_setsid_child(marker: str) -> str:
    """A new session, out of the tool's process group: it must still end with the call."""
    import _posixsubprocess
    import os

    read_end, write_end = os.pipe()
    _posixsubprocess.fork_exec(
        [b"/bin/sleep", b"300", marker.encode()], [b"/bin/sleep"], True, (write_end,), None, None,
        -1, -1, -1, -1, -1, -1, read_end, write_end, True, True, -1, None, None, None, -1, None, False,
    )  # fmt: skip
    os.close(write_end)
    os.read(read_end, 100)
    return "left a child"


def reads_a_file(path: str) -> str:
    """Reads any file it is told about."""
    with open(path) as handle:
        return handle.read()


def lists_a_folder(path: str) -> list[str]:
    """Lists any folder it is told about."""
    import os

    return sorted(os.listdir(path))


def forks_without_bound(attempts: int) -> str:
    """A fork bomb with the hook's process list emptied: each child sleeps, so they all count at once."""
    import os
    import time

    import __main__

    __main__.PROCESSES = set()
    started = 0
    try:
        for _ in range(attempts):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            started += 1
    except OSError as exc:
        return f"stopped after {started}: {exc.strerror}"
    return f"started {started}"


def waits_for_a_file(path: str) -> str:
    """Waits (up to its time limit) until ``path`` exists: the test looks at the call meanwhile."""
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return "seen"


def makes_a_user_namespace() -> str:
    """unshare(CLONE_NEWUSER) through libc, the hook's lists emptied first."""
    import __main__

    __main__.PROCESSES = set()  # before importing ctypes, which loads libpython
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) == 0:
        return "made a user namespace"
    return "refused: " + os.strerror(ctypes.get_errno())


# --- helpers ------------------------------------------------------------------------------------------------


@pytest.fixture
def outside() -> Iterator[Path]:
    """An empty folder outside the sandbox's own, visible (read-only) from inside it."""
    folder = VISIBLE_ROOT / f".escape-target-{secrets.token_hex(4)}"
    folder.mkdir()
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["as-started", "user-namespace"])
def sandbox(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> LocalToolSandbox:
    """Both ways the sandbox drops privileges: as root (setpriv to nobody) and as any other user (a user
    namespace); the second is forced here by hiding that we are root."""
    if request.param == "user-namespace":
        monkeypatch.setattr(local_sandbox.os, "geteuid", lambda: 1000)
    runner = LocalToolSandbox(timeout=8)
    assert runner.isolated and "bubblewrap" in runner.isolation
    return runner


def refused_by_the_system(content: str) -> bool:
    """The write failed at the operating system: a read-only mount, or (where the checkout lies under a folder
    the sandbox replaces, such as /tmp) a path that does not exist or cannot be entered inside it."""
    refusals = ("Read-only file system", "Permission denied", "No such file or directory")
    return any(refusal in content for refusal in refusals)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


# --- the escapes fail ---------------------------------------------------------------------------------------


def test_os_open_with_dir_fd_cannot_write_outside(sandbox: LocalToolSandbox, outside: Path) -> None:
    outcome = sandbox.run(tool(writes_through_dir_fd), {"folder": str(outside)})
    assert not outcome.ok and refused_by_the_system(outcome.content)
    assert list(outside.iterdir()) == []


def test_sqlite_cannot_write_outside(sandbox: LocalToolSandbox, outside: Path) -> None:
    outcome = sandbox.run(tool(writes_with_sqlite), {"folder": str(outside)})
    assert not outcome.ok and "unable to open database file" in outcome.content
    assert list(outside.iterdir()) == []


def test_rewriting_the_hooks_state_gains_nothing(sandbox: LocalToolSandbox, outside: Path) -> None:
    outcome = sandbox.run(tool(rewrites_the_hooks_state), {"folder": str(outside)})
    assert not outcome.ok and refused_by_the_system(outcome.content)
    assert list(outside.iterdir()) == []


def test_no_network_even_without_the_hook(sandbox: LocalToolSandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    try:
        outcome = sandbox.run(tool(connects_after_rewriting_the_hook), {"port": server.getsockname()[1]})
        assert not outcome.ok and "Connection refused" in outcome.content  # its own, empty loopback
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_no_signal_reaches_a_process_outside(sandbox: LocalToolSandbox) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        outcome = sandbox.run(tool(signals_outside), {"pid": victim.pid})
        assert not outcome.ok and "ProcessLookupError" in outcome.content  # not in its PID namespace
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_posixsubprocess_fork_exec_writes_nothing_and_ends_with_the_call(
    sandbox: LocalToolSandbox, outside: Path
) -> None:
    marker = f"sandserve-escape-{secrets.token_hex(6)}"
    outcome = sandbox.run(tool(forks_with_posixsubprocess), {"folder": str(outside), "marker": marker})
    assert outcome.ok, outcome.content  # it may start a process inside the sandbox...
    assert list(outside.iterdir()) == []  # ...which cannot write outside...
    assert _gone(marker)  # ...and does not outlive the call


def test_a_setsid_child_does_not_outlive_the_call(sandbox: LocalToolSandbox) -> None:
    marker = f"sandserve-setsid-{secrets.token_hex(6)}"
    outcome = sandbox.run(tool(leaves_a_setsid_child), {"marker": marker})
    assert outcome.ok, outcome.content
    assert _gone(marker), "a process started by the tool is still running after the call"


def test_the_ledger_and_home_cannot_be_read(
    sandbox: LocalToolSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = VISIBLE_ROOT / f".escape-state-{secrets.token_hex(4)}"  # outside /tmp: hidden on its own merits
    private_state = os.environ["SANDSERVE_STATE_DIR"]
    monkeypatch.setenv("SANDSERVE_STATE_DIR", str(state))
    try:
        state.mkdir(mode=0o755)
        ledger = state / "ledger.sqlite"
        ledger.write_text("OPENAI_API_KEY=sk-never-shown")
        ledger.chmod(0o644)
        outcome = LocalToolSandbox(timeout=8).run(tool(reads_a_file), {"path": str(ledger)})
        assert not outcome.ok and "No such file or directory" in outcome.content
        assert "sk-never-shown" not in outcome.content
        home_file = Path.home() / ".bashrc"
        if home_file.exists():
            home = sandbox.run(tool(reads_a_file), {"path": str(home_file)})
            assert not home.ok and "No such file or directory" in home.content
    finally:
        monkeypatch.setenv("SANDSERVE_STATE_DIR", private_state)
        shutil.rmtree(state, ignore_errors=True)


def test_a_fork_bomb_is_bounded_by_a_process_count() -> None:
    """As started (not the user-namespace variant, which is root pretending: the kernel does not count a real
    root's processes against RLIMIT_NPROC in a namespace it made; a real non-root user's it does)."""
    sandbox = LocalToolSandbox(timeout=8)
    outcome = sandbox.run(tool(forks_without_bound), {"attempts": 1000})
    assert outcome.ok, outcome.content
    assert outcome.content.startswith("stopped after"), outcome.content
    started = int(outcome.content.split()[2].rstrip(":"))
    assert started < sandbox.max_processes
    assert "Resource temporarily unavailable" in outcome.content


def test_each_call_has_a_pids_cgroup_of_its_own_where_one_can_be_made(project: Path) -> None:
    probe = PidsCgroup.create(8)
    if probe is None:
        pytest.skip("no pids cgroup can be made here (not root, or no writable pids controller)")
    probe.remove()
    sandbox = LocalToolSandbox(timeout=60)
    go = project / "go"
    outcome: list[ToolOutcome] = []
    call = threading.Thread(
        target=lambda: outcome.append(sandbox.run(tool(waits_for_a_file, paths=[project]), {"path": str(go)}))
    )
    before = set(_tool_cgroups())
    call.start()
    try:
        (mine,) = poll_until(lambda: set(_tool_cgroups()) - before, what="the call's cgroup", interval=0.02)
        assert (mine / "pids.max").read_text().strip() == str(sandbox.max_processes + CGROUP_OVERHEAD)
        # Made just before the call's first process moves in.
        poll_until(lambda: (mine / "cgroup.procs").read_text().split(), what="the call's processes in it")
    finally:
        go.touch()
        call.join(timeout=60)
    assert outcome and outcome[0].content == "seen", outcome
    assert mine not in set(_tool_cgroups())  # removed after the call


def _tool_cgroups() -> list[Path]:
    return [path for parent in pids_cgroup._parents() for path in parent.glob("sandserve-tool-*")]


def test_no_user_namespace_can_be_made_inside(sandbox: LocalToolSandbox) -> None:
    outcome = sandbox.run(tool(makes_a_user_namespace), {})
    assert outcome.ok, outcome.content
    assert outcome.content.startswith("refused"), outcome.content


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder outside /tmp and home (as /srv/app would be), with the .env the README describes,
    readable by everyone, and the working directory."""
    folder = VISIBLE_ROOT / f".project-{secrets.token_hex(4)}"
    folder.mkdir()
    folder.chmod(0o755)
    (folder / ".env").write_text("DAYTONA_API_KEY=dtn_never_shown\n")
    (folder / ".env").chmod(0o644)
    monkeypatch.chdir(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_working_directorys_env_file_cannot_be_read(sandbox: LocalToolSandbox, project: Path) -> None:
    outcome = sandbox.run(tool(reads_a_file), {"path": str(project / ".env")})
    assert not outcome.ok and "No such file or directory" in outcome.content
    assert "dtn_never_shown" not in outcome.content
    listing = sandbox.run(tool(lists_a_folder), {"path": str(project)})
    assert not listing.ok and "No such file or directory" in listing.content


@pytest.mark.parametrize("folder", ["/srv", "/opt", "/mnt", "/home", "/root", "/var"])
def test_user_data_folders_are_not_shown(sandbox: LocalToolSandbox, folder: str) -> None:
    outcome = sandbox.run(tool(lists_a_folder), {"path": folder})
    # Absent, or only the folders on the way to the interpreter (/root/.pyenv) or the private /var/tmp
    assert not outcome.ok or outcome.content in ("[]", '[".pyenv"]', '["tmp"]'), outcome.content


def test_a_declared_path_is_readable_and_only_that(sandbox: LocalToolSandbox, project: Path) -> None:
    data = project / "data"
    data.mkdir()
    (data / "notes.txt").write_text("shared on purpose")
    (data / "notes.txt").chmod(0o644)
    reader = tool(reads_a_file, paths=[data])
    assert reader.paths == (str(data),)
    assert sandbox.run(reader, {"path": str(data / "notes.txt")}).content == "shared on purpose"
    secret = sandbox.run(reader, {"path": str(project / ".env")})
    assert not secret.ok and "dtn_never_shown" not in secret.content
    writes = sandbox.run(tool(writes_through_dir_fd, paths=[data]), {"folder": str(data)})
    assert not writes.ok and "Read-only file system" in writes.content
    assert sorted(path.name for path in data.iterdir()) == ["notes.txt"]


def test_a_declared_path_that_does_not_exist_is_a_failed_call(sandbox: LocalToolSandbox) -> None:
    missing = str(VISIBLE_ROOT / f"absent-{secrets.token_hex(4)}")
    outcome = sandbox.run(tool(reads_a_file, paths=[missing]), {"path": missing})
    assert not outcome.ok and "does not exist on this machine" in outcome.content


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, tools run as a fresh unprivileged user")
def test_run_by_root_a_tool_cannot_read_roots_own_files(outside: Path) -> None:
    sandbox = LocalToolSandbox(timeout=8)
    private = outside / "root-only.txt"
    private.write_text("root's secret")
    private.chmod(0o600)
    outcome = sandbox.run(tool(reads_a_file, paths=[outside]), {"path": str(private)})
    assert not outcome.ok and "Permission denied" in outcome.content
    shadow = sandbox.run(tool(reads_a_file), {"path": "/etc/shadow"})
    assert not shadow.ok and "Permission denied" in shadow.content


def _gone(marker: str, wait_s: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s
    while processes_with(marker):
        if time.monotonic() > deadline:
            for pid in processes_with(marker):  # never leave it running, even when the test fails
                os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.05)
    return True


# --- where there is no isolation ----------------------------------------------------------------------------


def test_without_isolation_tools_run_only_on_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    monkeypatch.delenv(local_sandbox.ALLOW_UNISOLATED_ENV, raising=False)
    bubblewrap.cache_clear()
    try:
        with pytest.raises(ToolIsolationUnavailableError, match="cannot be isolated") as refused:
            LocalToolSandbox()
        assert "apt-get install bubblewrap" in (refused.value.hint or "")
        assert exit_code_for(refused.value) == 2  # the CLI maps it (cli/_app.py)
        opted_in = LocalToolSandbox(allow_unisolated=True, use_network_namespace=False)
        assert not opted_in.isolated and opted_in.isolation.startswith("NOT ISOLATED")
        monkeypatch.setenv(local_sandbox.ALLOW_UNISOLATED_ENV, "1")
        assert not LocalToolSandbox(use_network_namespace=False).isolated
    finally:
        bubblewrap.cache_clear()
