"""A job inside an endpoint's own Daytona sandbox, next to its server (the guide's colocated mode).

Files go up with the SDK's file API into a fresh folder under the sandbox user's home; the environment goes
up as a file the command sources and deletes (so no key is on a command line); the command runs as a session
command whose cumulative log is polled and streamed; files under the output folder come back with the SDK's
bulk download.
"""

from __future__ import annotations

import secrets
import shlex
import time
from typing import Any

from sandserve.errors import ColocatedRunError
from sandserve.providers.colocated import ColocatedJob, ColocatedOutcome, OnOutput, safe_relative

ENV_FILE = ".sandserve-env"
POLL_SECONDS = 0.3


def run_in_sandbox(sandbox: Any, job: ColocatedJob, on_output: OnOutput) -> ColocatedOutcome:
    from daytona import FileDownloadRequest, FileUpload, SessionExecuteRequest

    run_id = secrets.token_hex(4)
    workdir = f"{sandbox.get_user_home_dir().rstrip('/')}/sandserve-runs/{run_id}"
    env_file = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in job.env.items())
    uploads = [FileUpload(source=env_file.encode(), destination=f"{workdir}/{ENV_FILE}")]
    uploads += [
        FileUpload(source=content, destination=f"{workdir}/{safe_relative(name)}")
        for name, content in job.uploads.items()
    ]
    sandbox.fs.upload_files(uploads)
    output = f"{workdir}/{safe_relative(job.output_dir)}"
    command = (
        f"cd {shlex.quote(workdir)} && mkdir -p {shlex.quote(output)} && . ./{ENV_FILE} "
        f"&& rm -f ./{ENV_FILE} && {job.command}"
    )
    session = f"sandserve-run-{run_id}"
    sandbox.process.create_session(session)
    try:
        started = sandbox.process.execute_session_command(
            session, SessionExecuteRequest(command=command, run_async=True)
        )
        exit_code = _follow(sandbox, session, started.cmd_id, job.timeout, on_output)
        listing = sandbox.process.exec(f"find {shlex.quote(output)} -type f", timeout=60)
        paths = [line for line in (listing.result or "").splitlines() if line.startswith(output + "/")]
        files: dict[str, bytes] = {}
        if paths:
            for result in sandbox.fs.download_files([FileDownloadRequest(source=path) for path in paths]):
                if result.error:
                    raise ColocatedRunError(
                        f"Could not bring back {result.source}: {result.error}",
                        hint="Run again; the file is still in the sandbox.",
                    )
                files[safe_relative(result.source[len(output) + 1 :])] = bytes(result.result)
    finally:
        try:
            sandbox.process.delete_session(session)
        except Exception:
            pass
    return ColocatedOutcome(exit_code, files, f"sandbox {sandbox.id}:{workdir}")


def _follow(sandbox: Any, session: str, cmd_id: str, timeout: float | None, on_output: OnOutput) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = 0
    while True:
        command = sandbox.process.get_session_command(session, cmd_id)
        text = sandbox.process.get_session_command_logs(session, cmd_id).output or ""
        if len(text) > shown:
            on_output(text[shown:])
            shown = len(text)
        if command.exit_code is not None:
            text = sandbox.process.get_session_command_logs(session, cmd_id).output or ""
            if len(text) > shown:
                on_output(text[shown:])
            return int(command.exit_code)
        if deadline is not None and time.monotonic() > deadline:
            raise ColocatedRunError(
                f"The job did not finish within {timeout:g} s; it was stopped.",
                hint="Raise --timeout, or look at what it was doing in the output above.",
            )
        time.sleep(POLL_SECONDS)
