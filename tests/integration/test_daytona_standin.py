"""The Daytona stand-in, driven through the real `daytona` SDK (sync and async)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import stat
import sys
import time
from collections.abc import Iterator

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))

import httpx
import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromImageParams,
    Daytona,
    DaytonaAuthenticationError,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaTimeoutError,
    GpuType,
    Image,
    ListSandboxesQuery,
    Resources,
    Sandbox,
    SessionExecuteRequest,
)
from daytona.common.errors import DaytonaProcessExecutionTimeoutError
from polling import poll_until
from standins._procs import pid_alive
from standins.daytona_api import DaytonaStandin

from sandserve.providers.local import free_port

PYTHON = "python3"  # the image's python, reached by name: this environment's, through path_prepend
HARNESS_BIN = [pathlib.Path(sys.executable).parent]
TOKEN_HEADER = "X-Daytona-Preview-Token"

# Answers every request with what it received; /stream sends "first", waits for the file "go", then "second".
ECHO_SERVER = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"data: first\n\n")
            deadline = time.time() + 10
            while not os.path.exists("go") and time.time() < deadline:
                time.sleep(0.02)
            self._chunk(b"data: second\n\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": self.rfile.read(length).decode(),
            "whoami": os.environ.get("WHOAMI", ""),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    do_GET = do_POST = do_PUT = _answer

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture(autouse=True)
def _isolated_from_real_daytona(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    for name in list(os.environ):
        if name.startswith("DAYTONA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # the SDK reads .env from the current directory


@pytest.fixture
def api() -> Iterator[DaytonaStandin]:
    with DaytonaStandin(path_prepend=HARNESS_BIN) as standin:
        yield standin


@pytest.fixture
def daytona(api: DaytonaStandin) -> Daytona:
    return Daytona(DaytonaConfig(api_key=api.api_key, api_url=api.url, target="us-east-1"))


def create(daytona: Daytona, **params: object) -> Sandbox:
    params_ = CreateSandboxFromImageParams(image="python:3.12-slim", **params)  # type: ignore[arg-type]
    return daytona.create(params_, timeout=30)


def start_echo_server(api: DaytonaStandin, sandbox: Sandbox, port: int) -> str:
    """Start the echo server in a session; returns the command id once it answers on the port."""
    (api.sandboxes[sandbox.id].home / "echo_server.py").write_text(ECHO_SERVER)
    sandbox.process.create_session("server")
    command = f"exec {PYTHON} echo_server.py {port}"
    request = SessionExecuteRequest(command=command, run_async=True)
    cmd = sandbox.process.execute_session_command("server", request)
    wait_for_port(port)
    return cmd.cmd_id


def wait_for_port(port: int) -> None:
    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    poll_until(listening, what=f"a server listening on {port}")


# ----- control plane -----


def test_create_from_image_with_gpu_labels_and_env(api: DaytonaStandin, daytona: Daytona) -> None:
    sandbox = daytona.create(
        CreateSandboxFromImageParams(
            image=Image.base("lmsysorg/sglang:v0.5.12.post1-cu130"),
            resources=Resources(gpu=1, gpu_type=[GpuType.H100, GpuType.RTX_PRO_6000]),
            ephemeral=True,
            auto_stop_interval=0,
            labels={"app": "sandserve", "model": "gpt-oss-20b"},
            env_vars={"HF_TOKEN": "hf-secret"},
        ),
        timeout=600,
    )

    assert sandbox.state == "started"
    assert (sandbox.gpu, sandbox.gpu_type) == (1, GpuType.H100)
    assert sandbox.labels["app"] == "sandserve" and sandbox.env == {"HF_TOKEN": "hf-secret"}
    record = api.sandboxes[sandbox.id]
    assert (record.auto_delete_interval, record.auto_stop_interval, record.target) == (0, 0, "us-east-1")
    assert record.build_info is not None
    assert "lmsysorg/sglang:v0.5.12.post1-cu130" in str(record.build_info.dockerfile_content)
    assert sandbox.process.exec("echo $HF_TOKEN").result == "hf-secret\n"
    assert daytona.get(sandbox.id).labels["model"] == "gpt-oss-20b"


def test_list_filters_by_labels(daytona: Daytona) -> None:
    first = create(daytona, labels={"app": "sandserve", "run": "1"})
    create(daytona, labels={"app": "sandserve", "run": "2"})
    create(daytona, labels={"app": "other"})

    assert len(list(daytona.list(ListSandboxesQuery(labels={"app": "sandserve"})))) == 2
    run_one = ListSandboxesQuery(labels={"app": "sandserve", "run": "1"})
    assert [s.id for s in daytona.list(run_one)] == [first.id]

    first.set_labels({"app": "moved"})
    assert [s.id for s in daytona.list(ListSandboxesQuery(labels={"app": "moved"}))] == [first.id]


def test_gpu_quota_failure_is_a_bad_request_naming_the_limit(api: DaytonaStandin, daytona: Daytona) -> None:
    api.fail_next_create_with_quota()

    with pytest.raises(DaytonaBadRequestError) as failure:
        create(daytona, resources=Resources(gpu=1), ephemeral=True)

    assert "Total GPU limit exceeded" in failure.value.message
    error = failure.value
    assert (error.status_code, error.code, error.source) == (400, "BAD_REQUEST", "DAYTONA_API")
    assert api.sandboxes == {}
    create(daytona, resources=Resources(gpu=1), ephemeral=True)  # only the next create fails


def test_gpu_quota_counts_live_gpu_sandboxes(tmp_path: pathlib.Path) -> None:
    with DaytonaStandin(gpu_quota=1, path_prepend=HARNESS_BIN) as api:
        daytona = Daytona(DaytonaConfig(api_key=api.api_key, api_url=api.url, target="us-east-1"))
        first = create(daytona, resources=Resources(gpu=1), ephemeral=True)
        with pytest.raises(DaytonaBadRequestError, match=r"Total GPU limit exceeded\. Maximum allowed: 1"):
            create(daytona, resources=Resources(gpu=1), ephemeral=True)
        daytona.delete(first)
        create(daytona, resources=Resources(gpu=1), ephemeral=True)


def test_gpu_sandbox_must_be_ephemeral(daytona: Daytona) -> None:
    with pytest.raises(DaytonaBadRequestError, match="GPU sandboxes must be ephemeral"):
        create(daytona, resources=Resources(gpu=1))


def test_hung_create_times_out_with_the_sandbox_id(api: DaytonaStandin, daytona: Daytona) -> None:
    api.hang_create(60)

    with pytest.raises(DaytonaTimeoutError) as failure:
        create_params = CreateSandboxFromImageParams(image="python:3.12-slim", labels={"app": "hung"})
        daytona.create(create_params, timeout=1)

    sandbox_id = failure.value.sandbox_id
    assert sandbox_id is not None and sandbox_id in api.sandboxes
    listed = list(daytona.list(ListSandboxesQuery(labels={"app": "hung"})))
    assert [(s.id, s.state) for s in listed] == [(sandbox_id, "pending_build")]
    daytona.delete(daytona.get(sandbox_id))
    assert api.deleted_ids == [sandbox_id]


def test_wrong_api_key_is_rejected(api: DaytonaStandin) -> None:
    intruder = Daytona(DaytonaConfig(api_key="not-the-key", api_url=api.url, target="us-east-1"))
    with pytest.raises(DaytonaAuthenticationError):
        list(intruder.list())


def test_volume_get_or_create_and_mount(api: DaytonaStandin, daytona: Daytona) -> None:
    from daytona import VolumeMount

    volume = daytona.volume.get("hf-cache", create=True)
    assert volume.state == "ready" and daytona.volume.get("hf-cache").id == volume.id

    mount = VolumeMount(volume_id=volume.id, mount_path="/root/.cache/huggingface")
    sandbox = create(daytona, volumes=[mount])
    assert [v.volume_id for v in api.sandboxes[sandbox.id].volumes] == [volume.id]


def test_stopping_an_ephemeral_sandbox_deletes_it(api: DaytonaStandin, daytona: Daytona) -> None:
    sandbox = create(daytona, ephemeral=True)
    kept = create(daytona)

    sandbox.stop()
    kept.stop()

    assert api.deleted_ids == [sandbox.id]
    assert api.sandboxes[kept.id].state == "stopped"
    kept.start()
    assert kept.process.exec("true").exit_code == 0


# ----- processes -----


def test_exec_runs_in_the_sandbox_home_with_env(api: DaytonaStandin, daytona: Daytona) -> None:
    sandbox = create(daytona, env_vars={"FROM_SANDBOX": "a"})
    (api.sandboxes[sandbox.id].home / "sub").mkdir()

    command = "echo $FROM_SANDBOX $FROM_CALL; pwd; echo oops >&2; exit 3"
    result = sandbox.process.exec(command, env={"FROM_CALL": "b"})
    assert result.exit_code == 3
    assert result.result == f"a b\n{api.sandboxes[sandbox.id].home}\noops\n"
    assert sandbox.process.exec("pwd", cwd="sub").result.strip().endswith("/sub")
    assert sandbox.process.exec("echo $HOME").result.strip() == str(api.sandboxes[sandbox.id].home)


def test_a_program_only_this_machine_has_is_not_found_in_a_sandbox(
    api: DaytonaStandin, daytona: Daytona, tmp_path: pathlib.Path
) -> None:
    sandbox = create(daytona)
    home = api.sandboxes[sandbox.id].home
    # A file of this machine's, as its llama-server build is.
    host_program = tmp_path / "built-here"
    host_program.write_text("#!/bin/sh\necho ran on the host\n")
    host_program.chmod(0o755)

    for command in (str(host_program), f"LLAMA_API_KEY=x exec {host_program} -m model.gguf", sys.executable):
        result = sandbox.process.exec(command)
        program = command.split()[-1] if command == sys.executable else str(host_program)
        assert result.exit_code == 127, (command, result.result)
        assert result.result == f"bash: line 1: {program}: No such file or directory\n"

    sandbox.process.create_session("server")
    request = SessionExecuteRequest(command=f"{host_program} --port 8000", run_async=True)
    cmd = sandbox.process.execute_session_command("server", request)
    poll_until(
        lambda: sandbox.process.get_session_command("server", cmd.cmd_id).exit_code is not None,
        what="the command's exit code",
    )
    assert sandbox.process.get_session_command("server", cmd.cmd_id).exit_code == 127
    logs = sandbox.process.get_session_command_logs("server", cmd.cmd_id)
    assert "No such file or directory" in logs.output and "ran on the host" not in logs.output

    # What the image has, the harness's python by name, and a program put in the sandbox itself all run.
    (home / "mine.sh").write_text("#!/bin/sh\necho mine\n")
    (home / "mine.sh").chmod(0o755)
    ran = f"/bin/echo image && {PYTHON} -c 'print(6 * 7)' && {home}/mine.sh && ./mine.sh"
    assert sandbox.process.exec(ran).result == "image\n42\nmine\nmine\n"


def test_exec_timeout_kills_the_command(daytona: Daytona) -> None:
    sandbox = create(daytona)
    with pytest.raises(DaytonaProcessExecutionTimeoutError):
        sandbox.process.exec("sleep 30", timeout=1)


def test_code_run_runs_python(daytona: Daytona) -> None:
    sandbox = create(daytona)
    response = sandbox.process.code_run("import sys; print(6 * 7); sys.exit(2)")
    assert (response.exit_code, response.result) == (2, "42\n")


def test_session_logs_grow_and_exit_code_appears_at_the_end(api: DaytonaStandin, daytona: Daytona) -> None:
    sandbox = create(daytona)
    home = api.sandboxes[sandbox.id].home
    sandbox.process.create_session("sglang")
    command = "echo loading; echo warn >&2; while [ ! -e go ]; do sleep 0.02; done; echo ready; exit 7"
    request = SessionExecuteRequest(command=command, run_async=True)
    cmd = sandbox.process.execute_session_command("sglang", request)

    poll_until(
        lambda: "warn" in sandbox.process.get_session_command_logs("sglang", cmd.cmd_id).output,
        what="'warn' in the command's log",
    )
    assert sandbox.process.get_session_command("sglang", cmd.cmd_id).exit_code is None
    (home / "go").touch()
    poll_until(
        lambda: sandbox.process.get_session_command("sglang", cmd.cmd_id).exit_code is not None,
        what="the command's exit code",
    )

    assert sandbox.process.get_session_command("sglang", cmd.cmd_id).exit_code == 7
    logs = sandbox.process.get_session_command_logs("sglang", cmd.cmd_id)
    # stdout and stderr are two pipes: their relative order is not exact (nor is it with the daemon)
    assert sorted(logs.output.splitlines()[:2]) == ["loading", "warn"] and logs.output.endswith("ready\n")
    assert (logs.stdout, logs.stderr) == ("loading\nready\n", "warn\n")


def test_session_command_logs_stream_over_websocket(daytona: Daytona) -> None:
    sandbox = create(daytona)
    sandbox.process.create_session("s")
    command = "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three"
    cmd = sandbox.process.execute_session_command("s", SessionExecuteRequest(command=command, run_async=True))
    stdout: list[str] = []
    stderr: list[str] = []

    asyncio.run(sandbox.process.get_session_command_logs_async("s", cmd.cmd_id, stdout.append, stderr.append))

    assert ("".join(stdout), "".join(stderr)) == ("one\nthree\n", "two\n")


def test_synchronous_session_command_returns_its_output(daytona: Daytona) -> None:
    sandbox = create(daytona)
    sandbox.process.create_session("s")
    response = sandbox.process.execute_session_command("s", SessionExecuteRequest(command="echo hi; exit 5"))
    assert (response.exit_code, response.stdout) == (5, "hi\n")


def test_delete_kills_processes_and_removes_the_sandbox(api: DaytonaStandin, daytona: Daytona) -> None:
    sandbox = create(daytona)
    home = api.sandboxes[sandbox.id].home
    sandbox.process.create_session("s")
    request = SessionExecuteRequest(command="sleep 300", run_async=True)
    cmd = sandbox.process.execute_session_command("s", request)
    background = int(sandbox.process.exec("sleep 300 > /dev/null 2>&1 & echo $!").result)
    session_pid = api.sandboxes[sandbox.id].sessions["s"][cmd.cmd_id].pid
    assert pid_alive(background) and pid_alive(session_pid)

    daytona.delete(sandbox)

    assert not pid_alive(background) and not pid_alive(session_pid)
    assert api.deleted_ids == [sandbox.id] and not home.exists()
    with pytest.raises(DaytonaNotFoundError):
        daytona.get(sandbox.id)


def test_path_prepend_and_extra_env_reach_sandbox_processes(tmp_path: pathlib.Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fake-sglang"
    fake.write_text('#!/bin/sh\necho fake sglang $MODE "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)

    with DaytonaStandin(path_prepend=[bin_dir], extra_env={"MODE": "test"}) as api:
        daytona = Daytona(DaytonaConfig(api_key=api.api_key, api_url=api.url, target="us-east-1"))
        sandbox = create(daytona)
        assert sandbox.process.exec("fake-sglang --port 8000").result == "fake sglang test --port 8000\n"


# ----- preview proxy -----


def test_private_preview_needs_the_token(api: DaytonaStandin, daytona: Daytona) -> None:
    port = free_port()
    sandbox = create(daytona)
    server = f"{PYTHON} -m http.server {port} --bind 127.0.0.1"
    sandbox.process.exec(f"echo hello > hello.txt; {server} > server.log 2>&1 &")
    wait_for_port(port)
    preview = sandbox.get_preview_link(port)

    answer = httpx.get(preview.url + "/hello.txt", headers={TOKEN_HEADER: preview.token})
    assert (answer.status_code, answer.text) == (200, "hello\n")
    assert httpx.get(preview.url + "/hello.txt").status_code == 401
    assert httpx.get(preview.url, headers={TOKEN_HEADER: "wrong"}).status_code == 401
    assert httpx.get(preview.url, headers={"Authorization": f"Bearer {api.api_key}"}).status_code == 200


def test_preview_forwards_method_path_query_body_and_headers(api: DaytonaStandin, daytona: Daytona) -> None:
    port = free_port()
    sandbox = create(daytona)
    start_echo_server(api, sandbox, port)
    preview = sandbox.get_preview_link(port)

    response = httpx.post(
        preview.url + "/v1/chat/completions?stream=false&x=%2F",
        headers={TOKEN_HEADER: preview.token, "Authorization": "Bearer server-key", "X-Custom": "1"},
        content=b'{"model": "m"}',
    )

    assert response.status_code == 200
    seen = response.json()
    assert (seen["method"], seen["body"]) == ("POST", '{"model": "m"}')
    assert seen["path"] == "/v1/chat/completions?stream=false&x=%2F"
    assert seen["headers"]["authorization"] == "Bearer server-key" and seen["headers"]["x-custom"] == "1"
    assert "x-daytona-preview-token" not in seen["headers"]


def test_preview_streams_chunk_by_chunk(api: DaytonaStandin, daytona: Daytona) -> None:
    port = free_port()
    sandbox = create(daytona, public=True)
    start_echo_server(api, sandbox, port)
    preview = sandbox.get_preview_link(port)

    with httpx.stream("GET", preview.url + "/stream", timeout=5) as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"data: first\n\n"  # arrives while the server still waits for "go"
        (api.sandboxes[sandbox.id].home / "go").touch()
        assert b"".join(chunks) == b"data: second\n\n"


def test_signed_url_works_without_header_until_expired(api: DaytonaStandin, daytona: Daytona) -> None:
    port = free_port()
    sandbox = create(daytona)
    start_echo_server(api, sandbox, port)

    revoked = sandbox.create_signed_preview_url(port, expires_in_seconds=3600)
    # Long enough to be used once on a loaded machine, short enough to wait out.
    short = sandbox.create_signed_preview_url(port, expires_in_seconds=4)
    assert httpx.get(short.url).status_code == 200
    assert (revoked.port, revoked.sandbox_id) == (port, sandbox.id)
    assert httpx.get(revoked.url + "/health").json()["path"] == "/health"

    sandbox.expire_signed_preview_url(port, revoked.token)
    assert httpx.get(revoked.url + "/health").status_code == 401
    time.sleep(4.1)
    assert httpx.get(short.url).status_code == 401


def test_public_sandbox_needs_no_token(api: DaytonaStandin, daytona: Daytona) -> None:
    port = free_port()
    public = create(daytona, public=True)
    start_echo_server(api, public, port)
    assert httpx.get(public.get_preview_link(port).url).status_code == 200

    private = create(daytona)
    url = private.get_preview_link(port).url  # same local port: the proxy only checks auth per sandbox
    assert httpx.get(url).status_code == 401
    private.set_public(True)
    assert httpx.get(url).status_code == 200


def test_preview_answers_502_when_nothing_listens(daytona: Daytona) -> None:
    sandbox = create(daytona)
    preview = sandbox.get_preview_link(free_port())
    assert httpx.get(preview.url, headers={TOKEN_HEADER: preview.token}).status_code == 502


def test_remapped_ports_give_each_sandbox_its_own_local_port(tmp_path: pathlib.Path) -> None:
    with DaytonaStandin(remap_ports=[8000], path_prepend=HARNESS_BIN) as api:
        daytona = Daytona(DaytonaConfig(api_key=api.api_key, api_url=api.url, target="us-east-1"))
        answers = []
        for name in ("a", "b"):
            sandbox = create(daytona, public=True, env_vars={"WHOAMI": name})
            local = int(sandbox.process.exec("echo $DAYTONA_STANDIN_PORT_8000").result)
            assert local == api.local_port(sandbox.id, 8000) != 8000
            start_echo_server(api, sandbox, local)
            answers.append(httpx.get(sandbox.get_preview_link(8000).url).json()["whoami"])
        assert answers == ["a", "b"]


# ----- async client -----


def test_async_client_create_exec_session_delete(api: DaytonaStandin) -> None:
    async def scenario() -> None:
        config = DaytonaConfig(api_key=api.api_key, api_url=api.url, target="us-east-1")
        async with AsyncDaytona(config) as daytona:
            params = CreateSandboxFromImageParams(image="x", env_vars={"A": "1"})
            sandbox = await daytona.create(params, timeout=30)
            assert (await sandbox.process.exec("echo $A")).result == "1\n"
            await sandbox.process.create_session("s")
            request = SessionExecuteRequest(command="echo hi; sleep 0.2; echo bye >&2", run_async=True)
            cmd = await sandbox.process.execute_session_command("s", request)
            out: list[str] = []
            await sandbox.process.get_session_command_logs_async("s", cmd.cmd_id, out.append, out.append)
            assert "".join(out) == "hi\nbye\n"
            assert (await sandbox.process.get_session_command("s", cmd.cmd_id)).exit_code == 0
            assert (await sandbox.get_preview_link(8000)).token == api.sandboxes[sandbox.id].preview_token

            api.hang_create(60)
            with pytest.raises(DaytonaTimeoutError) as failure:
                await daytona.create(CreateSandboxFromImageParams(image="x"), timeout=1)
            assert failure.value.sandbox_id in api.sandboxes

            await daytona.delete(sandbox)
            assert api.deleted_ids == [sandbox.id]

    asyncio.run(scenario())


def test_errors_carry_status_and_source(daytona: Daytona) -> None:
    sandbox = create(daytona)
    with pytest.raises(DaytonaError) as failure:
        sandbox.process.get_session_command("missing", "nope")
    assert (failure.value.status_code, failure.value.source) == (404, "DAYTONA_DAEMON")
