"""The Daytona stand-in's toolbox (the daemon in each sandbox): exec, code-run, sessions, their logs, files.

A mixin of `DaytonaStandin`: it uses the stand-in's sandboxes, its environment settings and `_sandbox`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from daytona_api_client import SandboxState
from daytona_toolbox_api_client import (
    CodeRunRequest,
    CodeRunResponse,
    Command,
    CreateSessionRequest,
    ExecuteRequest,
    ExecuteResponse,
    Session,
    SessionCommandLogsResponse,
    SessionExecuteRequest,
    SessionExecuteResponse,
    UserHomeDirResponse,
    WorkDirResponse,
)

from . import _daytona_gpus, _daytona_rules, _image
from ._daytona_http import StandinError, _json, _json_body
from ._procs import STDERR, STDOUT, CommandRun, kill_groups

if TYPE_CHECKING:
    from .daytona_api import SandboxRecord

_EXEC_DEFAULT_TIMEOUT = 360  # seconds, the daemon's default for /process/execute
# Log stream framing the SDK demultiplexes (daytona.common.process.STDOUT_PREFIX / STDERR_PREFIX).
_STREAM_PREFIX = {STDOUT: b"\x01\x01\x01", STDERR: b"\x02\x02\x02"}
#: What a sandbox process finds in PATH (the image's own, not this machine's).
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ToolboxRoutes:
    """The toolbox routes (`/toolbox/{sandboxId}/...`)."""

    sandboxes: dict[str, Any]
    python: str
    path_prepend: list[str]
    extra_env: dict[str, str]
    vault: dict[str, str]

    def _sandbox(self, request: web.Request) -> Any:
        raise NotImplementedError

    # ----- toolbox: processes -----

    async def _exec(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        body = _daytona_rules.parse(ExecuteRequest, await _json_body(request))
        assert body is not None
        argv = ["bash", "-c", body.command]
        run = self._run(record, argv, body.cwd, body.envs, body.command, combined=True)
        await self._finish_within(run, body.timeout)
        return _json(ExecuteResponse(exit_code=run.exit_code, result=run.output))

    async def _code_run(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        body = _daytona_rules.parse(CodeRunRequest, await _json_body(request))
        assert body is not None
        if body.language != "python":
            raise StandinError(400, f"unsupported language in the stand-in: {body.language}")
        argv = [self.python, "-c", body.code, *(body.argv or [])]
        run = self._run(record, argv, None, body.envs, body.code, combined=True)
        await self._finish_within(run, body.timeout)
        return _json(CodeRunResponse(exit_code=run.exit_code, result=run.output))

    async def _finish_within(self, run: CommandRun, timeout: int | None) -> None:
        if not await run.wait(timeout if timeout and timeout > 0 else _EXEC_DEFAULT_TIMEOUT):
            await asyncio.to_thread(kill_groups, [run.pgid], 0.5)
            raise StandinError(408, "command execution timeout", "PROCESS_EXECUTION_TIMEOUT")

    async def _list_sessions(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        return _json([_session(sid, cmds) for sid, cmds in record.sessions.items()])

    async def _create_session(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        body = _daytona_rules.parse(CreateSessionRequest, await _json_body(request))
        assert body is not None
        if body.session_id in record.sessions:
            raise StandinError(409, "session already exists")
        record.sessions[body.session_id] = {}
        return web.Response(status=201)

    async def _get_session(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        session_id = request.match_info["session"]
        return _json(_session(session_id, self._commands(record, session_id)))

    async def _delete_session(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        commands = self._commands(record, request.match_info["session"])
        await asyncio.to_thread(kill_groups, [run.pgid for run in commands.values()])
        del record.sessions[request.match_info["session"]]
        return web.Response(status=204)

    async def _session_exec(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        commands = self._commands(record, request.match_info["session"])
        body = _daytona_rules.parse(SessionExecuteRequest, await _json_body(request))
        assert body is not None
        if not body.command.strip():
            raise StandinError(400, "command cannot be empty")
        run = self._run(record, ["bash", "-c", body.command], None, None, body.command)
        commands[run.id] = run
        if body.run_async or body.var_async:
            return _json(SessionExecuteResponse(cmd_id=run.id), status=202)
        await run.wait()
        return _json(
            SessionExecuteResponse(
                cmd_id=run.id,
                exit_code=run.exit_code,
                output=run.output,
                stdout=run.stdout,
                stderr=run.stderr,
            )
        )

    async def _get_command(self, request: web.Request) -> web.Response:
        run = self._command(request)
        return _json(Command(id=run.id, command=run.command, exit_code=run.exit_code))

    async def _command_logs(self, request: web.Request) -> web.StreamResponse:
        run = self._command(request)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _json(SessionCommandLogsResponse(output=run.output, stdout=run.stdout, stderr=run.stderr))
        follow = request.query.get("follow") == "true"
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sent = 0
        try:
            while True:
                finished = run.done.is_set()  # read before taking chunks, so none written after are missed
                chunks = run.chunks_since(sent)
                sent += len(chunks)
                for stream, data in chunks:
                    await ws.send_bytes(_STREAM_PREFIX[stream] + data)
                if finished or not follow or ws.closed:
                    break
                await asyncio.sleep(0.05)
        except ConnectionResetError:
            pass
        await ws.close()
        return ws

    async def _bulk_upload(self, request: web.Request) -> web.Response:
        """multipart: `files[i].path` (text) and `files[i].file` (content), as the SDK's upload_files
        sends."""
        record = self._running_sandbox(request)
        paths: dict[str, str] = {}
        contents: dict[str, bytes] = {}
        reader = await request.multipart()
        async for part in reader:
            name = part.name or ""  # type: ignore[union-attr]
            data = await part.read()  # type: ignore[union-attr]
            index = name.split("]", 1)[0]
            if name.endswith(".path"):
                paths[index] = data.decode()
            elif name.endswith(".file"):
                contents[index] = bytes(data)
        for index, path in paths.items():
            target = _sandbox_path(record.home, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(contents.get(index, b""))
        return web.Response(status=200)

    async def _bulk_download(self, request: web.Request) -> web.StreamResponse:
        """multipart/form-data: a `file` part per path (filename = the path asked for), or an `error` part."""
        from daytona_toolbox_api_client import FilesDownloadRequest

        record = self._running_sandbox(request)
        body = _daytona_rules.parse(FilesDownloadRequest, await _json_body(request))
        writer = aiohttp.MultipartWriter("form-data")
        for path in body.paths:
            target = _sandbox_path(record.home, path)
            # As Go's multipart.Writer.CreateFormFile writes it (the daemon is Go): quotes escaped, no
            # encoding.
            quoted = path.replace("\\", "\\\\").replace('"', '\\"')
            if target.is_file():
                kind, content, content_type = "file", target.read_bytes(), "application/octet-stream"
            else:
                kind, content, content_type = "error", f"file not found: {path}".encode(), "text/plain"
            writer.append(
                content,
                {
                    "Content-Type": content_type,
                    "Content-Disposition": f'form-data; name="{kind}"; filename="{quoted}"',
                },
            )
        response = web.StreamResponse(status=200)
        response.content_type = "multipart/form-data"
        response.headers["Content-Type"] = f"multipart/form-data; boundary={writer.boundary}"
        await response.prepare(request)
        await writer.write(response)
        await response.write_eof()
        return response

    async def _home_dir(self, request: web.Request) -> web.Response:
        record = self._running_sandbox(request)
        if request.path.endswith("/work-dir"):
            return _json(WorkDirResponse(dir=str(record.home)))
        return _json(UserHomeDirResponse(dir=str(record.home)))

    def _running_sandbox(self, request: web.Request) -> SandboxRecord:
        record = self._sandbox(request)
        if record.state != SandboxState.STARTED:
            raise StandinError(400, f"Sandbox {record.id} is not started (state: {record.state.value})")
        return record

    def _commands(self, record: SandboxRecord, session_id: str) -> dict[str, CommandRun]:
        if session_id not in record.sessions:
            raise StandinError(404, "session not found")
        return record.sessions[session_id]

    def _command(self, request: web.Request) -> CommandRun:
        record = self._running_sandbox(request)
        commands = self._commands(record, request.match_info["session"])
        if request.match_info["cmd"] not in commands:
            raise StandinError(404, "command not found")
        return commands[request.match_info["cmd"]]

    def _run(
        self,
        record: SandboxRecord,
        argv: list[str],
        cwd: str | None,
        envs: Mapping[str, str] | None,
        command: str,
        *,
        combined: bool = False,
    ) -> CommandRun:
        env = self._process_env(record, envs)
        if argv[:2] == ["bash", "-c"]:
            missing = _image.missing_program(command, record.home)
            if missing:  # this machine has it; a sandbox started from its image does not
                argv = _image.not_found_argv(missing)
        run = CommandRun(command, argv, _resolve_cwd(record.home, cwd), env, combined=combined)
        record.runs.append(run)
        return run

    def _process_env(self, record: SandboxRecord, envs: Mapping[str, str] | None) -> dict[str, str]:
        """A sandbox's own environment: nothing of this machine's leaks in (not even its PATH)."""
        env = {
            "PATH": os.pathsep.join([*self.path_prepend, SANDBOX_PATH]),
            "HOME": str(record.home),
            "LANG": "C.UTF-8",
            "DAYTONA_SANDBOX_ID": record.id,
            "DAYTONA_SANDBOX_USER": record.user,
        }
        env.update(self.extra_env)
        env.update({f"DAYTONA_STANDIN_PORT_{port}": str(local) for port, local in record.ports.items()})
        dockerfile = record.build_info.dockerfile_content if record.build_info else None
        env.update(_daytona_gpus.machine_env(record.gpu_type, record.gpu, _daytona_gpus.image_of(dockerfile)))
        env.update(record.env)
        env.update(
            {name: self.vault[secret] for name, secret in record.secrets.items() if secret in self.vault}
        )
        env.update(envs or {})
        return env


def _resolve_cwd(home: Path, cwd: str | None) -> Path:
    path = home / cwd if cwd else home  # an absolute cwd replaces home
    if not path.is_dir():
        raise StandinError(400, f"working directory {cwd} does not exist")
    return path


def _sandbox_path(home: Path, path: str) -> Path:
    """A sandbox path on this machine: the sandbox's HOME stands for its filesystem; relative paths start
    there."""
    target = Path(path) if Path(path).is_absolute() else home / path
    resolved = target.resolve()
    if not resolved.is_relative_to(home.resolve()):
        raise StandinError(400, f"path {path} is outside the sandbox (the stand-in keeps files under HOME)")
    return resolved


def _session(session_id: str, commands: Mapping[str, CommandRun]) -> Session:
    return Session(
        session_id=session_id,
        commands=[
            Command(id=run.id, command=run.command, exit_code=run.exit_code) for run in commands.values()
        ],
    )
