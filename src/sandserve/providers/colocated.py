"""Running code beside a server: a job (command, environment, files in, an output folder) and what came back.

On Daytona the job runs inside the endpoint's own sandbox (see ``daytona_colocated``); on the local provider
it runs on this machine (below). Either way the environment names the server as seen from where the code runs,
travels in the process environment (never on a command line), and files written under the job's output folder
come back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sandserve.errors import ColocatedRunError

#: The folder (relative to the job's working directory) whose files come back.
OUTPUT_DIR = "out"


@dataclass(frozen=True)
class ColocatedJob:
    command: str
    """A shell command, run in the job's own working directory."""
    env: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    """Relative path in the working directory -> content."""
    output_dir: str = OUTPUT_DIR
    timeout: float | None = None


@dataclass
class ColocatedOutcome:
    exit_code: int
    files: dict[str, bytes]
    """Files the job wrote under its output folder, by path relative to it."""
    where: str
    """Where it ran (the sandbox and folder, or this machine's folder)."""


OnOutput = Callable[[str], None]


@dataclass(frozen=True)
class InsideAccess:
    """How code running beside a server reaches it: exported to the job as ENDPOINT, OPENAI_API_KEY and
    TOKEN."""

    url: str
    api_key: str | None = None
    token: str = ""
    """What the guide's clients send in the preview-token header ("" where nothing checks it)."""


def safe_relative(path: str) -> str:
    """A relative path that stays inside its folder (no absolute path, no `..`): uploads and files coming
    back."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ColocatedRunError(
            f"{path!r} is not a path inside the job's folder.", hint="Use a relative path without '..'."
        )
    return str(pure)


def run_on_this_machine(job: ColocatedJob, on_output: OnOutput) -> ColocatedOutcome:
    """The local provider's way: a fresh temporary folder, the command in it, its output streamed."""
    workdir = Path(tempfile.mkdtemp(prefix="sandserve-run-"))
    try:
        for name, content in job.uploads.items():
            target = workdir / safe_relative(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        (workdir / job.output_dir).mkdir(exist_ok=True)
        process = subprocess.Popen(
            ["bash", "-c", job.command],
            cwd=workdir,
            env={**os.environ, **job.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        # A job that hangs without a word must still end: a timer kills its whole group at the deadline.
        timed_out = threading.Event()

        def stop_at_deadline() -> None:
            timed_out.set()
            _kill(process)

        timer = threading.Timer(job.timeout, stop_at_deadline) if job.timeout else None
        if timer is not None:
            timer.start()
        try:
            for line in process.stdout:
                on_output(line)
            exit_code = process.wait()
        except KeyboardInterrupt:
            _kill(process)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if timed_out.is_set():
            raise ColocatedRunError(
                f"The job did not finish within {job.timeout:g} s; it was stopped.",
                hint="Raise --timeout, or look at what it was doing in the output above.",
            )
        files = {
            str(path.relative_to(workdir / job.output_dir)): path.read_bytes()
            for path in sorted((workdir / job.output_dir).rglob("*"))
            if path.is_file()
        }
        return ColocatedOutcome(exit_code, files, f"this machine ({workdir})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill(process: subprocess.Popen[str]) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
