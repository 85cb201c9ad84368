"""A local stand-in for the Daytona HTTP API, to drive the real `daytona` SDK in tests (like moto for AWS).

    with DaytonaStandin() as api:
        daytona = Daytona(DaytonaConfig(api_key=api.api_key, api_url=api.url, target="us-east-1"))

Three faces, all on 127.0.0.1 and served from one background thread:
- control plane at `{url}` (= http://127.0.0.1:P/api): sandboxes, labels, public flag, preview links, volumes;
- toolbox at `http://127.0.0.1:P/toolbox/{sandboxId}/...` (the `toolboxProxyUrl` of every sandbox): exec,
  code-run, sessions, session logs (JSON snapshot or websocket stream);
- preview proxy at `{preview_base}` (own port): `/preview/{sandboxId}/{port}/...` and signed
  `/signed/{port}-{token}/...` forward to http://127.0.0.1:{local port}/..., with the auth rules of
  Daytona's proxy.

Sandboxes run real local processes in a temp directory each (their HOME and default cwd). A sandbox port IS
the local port, except ports listed in `remap_ports`: those get a free local port per sandbox, exported to its
processes as DAYTONA_STANDIN_PORT_<port>, so two sandboxes can both "serve on 8000".

JSON bodies are read and written with the SDK's generated models (daytona_api_client and
daytona_toolbox_api_client), and refused as the service refuses them (`_daytona_rules`): unknown fields and
enum values, more GPUs than a machine has, a GPU sandbox that is not ephemeral, spot without a GPU; GPUs
are placed by type in preference order from a fleet with free units per type (`_daytona_gpus`).

A new sandbox goes through the service's states (pending_build -> building_snapshot -> starting -> started for
an image, creating -> started for a snapshot), `state_step_seconds` each. Its processes see only their own
environment (a fixed PATH, HOME, the sandbox's env and secrets, the request's env), never this machine's.
A command naming a program by a path a fresh sandbox would not have (this machine's builds, files under /root
or /tmp: anything outside the image's directories and the sandbox's home) exits 127 with bash's "No such file
or directory", as it would there (`_image`); the harness's programs (`path_prepend`) are reached by bare name.
Preview requests count as activity (`last_activity_at`) unless they carry X-Daytona-Skip-Last-Activity-Update.
The event stream (Socket.IO, `_daytona_events`) sends sandbox.created / sandbox.state.updated, so the SDK
waits on events as it does against the service.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from daytona_api_client import (
    BuildInfo,
    CreateSandbox,
    CreateVolume,
    ListSandboxesResponse,
    PortPreviewUrl,
    Sandbox,
    SandboxLabels,
    SandboxListItem,
    SandboxState,
    SandboxVolume,
    SignedPortPreviewUrl,
    ToolboxProxyUrl,
    VolumeDto,
    VolumeState,
)
from daytona_toolbox_api_client import (
    CodeRunRequest,
    CodeRunResponse,
    Command,
    CreateSessionRequest,
    ErrorResponse,
    ExecuteRequest,
    ExecuteResponse,
    Session,
    SessionCommandLogsResponse,
    SessionExecuteRequest,
    SessionExecuteResponse,
    UserHomeDirResponse,
    WorkDirResponse,
)
from pydantic import ValidationError

from . import _daytona_events, _daytona_gpus, _daytona_rules, _image, _preview
from ._procs import STDERR, STDOUT, CommandRun, kill_groups

ORGANIZATION_ID = "standin-org"
GPU_LIMIT_MESSAGE = (
    "Total GPU limit exceeded. Maximum allowed: {maximum}.\n"
    "To increase concurrency limits, upgrade your organization's Tier by visiting "
    "https://app.daytona.io/dashboard/limits."
)
_EXEC_DEFAULT_TIMEOUT = 360  # seconds, the daemon's default for /process/execute
# Log stream framing the SDK demultiplexes (daytona.common.process.STDOUT_PREFIX / STDERR_PREFIX).
_STREAM_PREFIX = {STDOUT: b"\x01\x01\x01", STDERR: b"\x02\x02\x02"}
# Codes the API puts in its error envelope, by status (apps/api/src/common/errors/api-error-code.enum.ts).
_API_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT"}
_DAEMON_CODES = {**_API_CODES, 408: "REQUEST_TIMEOUT", 410: "GONE"}


_BOOT_STATES = frozenset(
    {
        SandboxState.PENDING_BUILD,
        SandboxState.BUILDING_SNAPSHOT,
        SandboxState.CREATING,
        SandboxState.STARTING,
    }
)
#: What a sandbox process finds in PATH (the image's own, not this machine's).
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SKIP_ACTIVITY_HEADER = "X-Daytona-Skip-Last-Activity-Update"


class StandinError(Exception):
    """An error answer: becomes the service's JSON error envelope (see `_error_middleware`)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass
class SandboxRecord:
    """What the stand-in knows about one sandbox; tests may read (and tweak) it."""

    id: str
    name: str
    home: Path
    preview_token: str
    labels: dict[str, str]
    env: dict[str, str]
    public: bool
    target: str
    cpu: int
    memory: int
    disk: int
    gpu: int
    gpu_type: str | None
    auto_stop_interval: int
    auto_archive_interval: int
    auto_delete_interval: int
    volumes: list[SandboxVolume]
    build_info: BuildInfo | None
    snapshot: str | None
    user: str
    created_at: str
    ready_at: float  # time.monotonic() at which the sandbox is "started"
    steps: list[tuple[float, SandboxState]] = field(default_factory=list)  # (from time, state) until ready_at
    stored_state: SandboxState = SandboxState.CREATING
    ttl_minutes: int = 0
    created_mono: float = field(default_factory=time.monotonic)
    active_mono: float = field(default_factory=time.monotonic)  # last activity (preview traffic, refresh)
    spot: bool = False
    last_activity_at: str | None = None
    activity_updates: int = 0  # preview requests that refreshed the idle timer
    toolbox_activity: int = 0  # toolbox requests that did
    error_reason: str | None = None
    ports: dict[int, int] = field(default_factory=dict)  # sandbox port -> local port (remapped ports only)
    secrets: dict[str, str] = field(
        default_factory=dict
    )  # env var -> vault secret name (recorded, not resolved)
    sessions: dict[str, dict[str, CommandRun]] = field(default_factory=dict)
    runs: list[CommandRun] = field(default_factory=list)  # every command started; their groups die with it
    last_activity: float = 0.0
    """time.time() of the last activity: preview traffic without X-Daytona-Skip-Last-Activity-Update: true
    counts, as on Daytona (auto-stop counts from it), and so does POST /last-activity."""

    @property
    def state(self) -> SandboxState:
        if self.stored_state in _BOOT_STATES:
            now = time.monotonic()
            if now >= self.ready_at:
                self.stored_state = SandboxState.STARTED
            else:
                for since, state in self.steps:
                    if now >= since:
                        self.stored_state = state
        return self.stored_state

    def local_port(self, port: int) -> int:
        return self.ports.get(port, port)


class DaytonaStandin:
    """The stand-in server. Use as a context manager, or call `start()` / `stop()`."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        extra_env: Mapping[str, str] | None = None,
        path_prepend: Iterable[str | os.PathLike[str]] = (),
        remap_ports: Iterable[int] = (),
        gpu_quota: int | None = None,
        python: str = sys.executable,
        state_step_seconds: float = 0.05,
        vault: Mapping[str, str] | None = None,
        event_stream: bool = True,
        minute_seconds: float = 60.0,
    ) -> None:
        """
        Args:
            api_key: the only key the API accepts (`Authorization: Bearer <key>`); anything else gets 401.
            extra_env: added to the environment of every sandbox process.
            path_prepend: directories put in front of PATH in every sandbox process (fake binaries).
            remap_ports: sandbox ports that get a distinct free local port per sandbox (see module doc).
            gpu_quota: when set, a create whose GPUs would exceed it (live sandboxes counted) fails as the
                real quota does.
            python: interpreter behind `process.code_run`.
            state_step_seconds: how long a new sandbox stays in each state before "started".
            vault: the organisation's secrets (name -> value): a sandbox's `secrets` entries name them and
                their processes get the values; a name not in it is refused.
            event_stream: serve the Socket.IO event stream (off: it answers 404 and the SDK polls).
            minute_seconds: how long a "minute" of ttlMinutes / autoStopInterval lasts here (tests shorten it
                to see the service end a sandbox: a TTL destroys it, an idle stop stops it, which deletes an
                ephemeral one).
        """
        self.minute_seconds = minute_seconds
        self._limits_task: asyncio.Task[None] | None = None
        self.event_stream = event_stream
        self.state_step_seconds = state_step_seconds
        self.vault = dict(vault or {})
        self.create_bodies: list[dict[str, Any]] = []  # every create request as received (raw JSON)
        self.ended_by_service: list[tuple[str, str]] = []  # (sandbox id, "ttl" | "auto-stop")
        self.events = _daytona_events.EventStream(api_key, ORGANIZATION_ID)
        self.api_key = api_key
        self.extra_env = dict(extra_env or {})
        self.path_prepend = [str(p) for p in path_prepend]
        self.remap_ports = list(remap_ports)
        self.gpu_quota = gpu_quota
        self.gpus = _daytona_gpus.GpuFleet()  # free units per GPU type: tests may set them
        self.python = python
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.volumes: dict[str, VolumeDto] = {}
        self.deleted_ids: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API/toolbox request, in order
        self._signed: dict[str, tuple[str, int, float]] = {}  # token -> (sandbox id, port, expiry epoch s)
        self._quota_failures = 0
        self._quota_maximum = 1
        self._create_delay = 0.0
        self._root: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._proxy_session: aiohttp.ClientSession | None = None
        self.api_port = 0
        self.preview_port = 0

    # ----- lifecycle -----

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api"

    @property
    def toolbox_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/toolbox"

    @property
    def preview_base(self) -> str:
        return f"http://127.0.0.1:{self.preview_port}"

    def __enter__(self) -> DaytonaStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="daytona-standin-"))
        api_sock, preview_sock = _listening_socket(), _listening_socket()
        self.api_port = api_sock.getsockname()[1]
        self.preview_port = preview_sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="daytona-standin", daemon=True)
        self._thread.start()
        self._call(self._serve(api_sock, preview_sock))

    def stop(self) -> None:
        """Kill every sandbox process, stop the servers, remove the sandboxes' directories."""
        kill_groups(pgid for record in self.sandboxes.values() for pgid in _pgids(record))
        if self._loop is not None and self._thread is not None:
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = self._thread = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _call(self, coro: Awaitable[Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)  # type: ignore[arg-type]

    async def _serve(self, api_sock: socket.socket, preview_sock: socket.socket) -> None:
        self._proxy_session = _preview.new_client_session()
        for app, sock in ((self._api_app(), api_sock), (self._preview_app(), preview_sock)):
            # Short: at stop every sandbox is being killed anyway, and event-stream sockets would hold it for
            # the full time.
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
        self.events.start(lambda: self.sandboxes, self._dto)
        self._limits_task = asyncio.get_running_loop().create_task(self._enforce_limits())

    async def _shutdown(self) -> None:
        await self.events.stop()
        if self._limits_task is not None:
            self._limits_task.cancel()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._proxy_session is not None:
            await self._proxy_session.close()
        await asyncio.sleep(0.05)  # let closed connections run their connection_lost callbacks
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:  # the event stream's ping loops, mostly
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    # ----- test controls -----

    def fail_next_create_with_quota(self, maximum: int = 1) -> None:
        """The next create fails as the API does: 400, "Total GPU limit exceeded. Maximum allowed: N..."."""
        self._quota_failures += 1
        self._quota_maximum = maximum

    def hang_create(self, seconds: float) -> None:
        """The next created sandbox stays "creating" for `seconds` (it exists and is listed meanwhile)."""
        self._create_delay = seconds

    def set_state(self, sandbox_id: str, state: SandboxState | str, error_reason: str | None = None) -> None:
        """Force a sandbox's state, e.g. "error" with a reason; processes are left alone."""
        record = self.sandboxes[sandbox_id]
        record.stored_state = SandboxState(state)
        record.error_reason = error_reason

    def local_port(self, sandbox_id: str, port: int) -> int:
        """The local port the preview proxy forwards (sandbox, port) to."""
        return self.sandboxes[sandbox_id].local_port(port)

    # ----- the HTTP apps -----

    def _api_app(self) -> web.Application:
        app = web.Application(middlewares=[self._error_middleware, self._auth_middleware])
        if self.event_stream:
            self.events.attach(app)
        sb = "/api/sandbox/{id}"
        tb = "/toolbox/{id}"
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("POST", "/api/sandbox", self._create),
            ("GET", "/api/sandbox", self._list),
            ("GET", sb, self._get),
            ("DELETE", sb, self._delete),
            ("POST", sb + "/start", self._start),
            ("POST", sb + "/stop", self._stop),
            ("PUT", sb + "/labels", self._replace_labels),
            ("POST", sb + "/public/{value}", self._set_public),
            ("POST", sb + "/autostop/{value}", self._set_interval("auto_stop_interval")),
            ("POST", sb + "/autoarchive/{value}", self._set_interval("auto_archive_interval")),
            ("POST", sb + "/autodelete/{value}", self._set_interval("auto_delete_interval")),
            ("POST", sb + "/last-activity", self._last_activity),
            ("GET", sb + "/toolbox-proxy-url", self._toolbox_proxy_url),
            ("GET", sb + "/ports/{port}/preview-url", self._preview_url),
            ("GET", sb + "/ports/{port}/signed-preview-url", self._signed_preview_url),
            ("POST", sb + "/ports/{port}/signed-preview-url/{token}/expire", self._expire_signed_preview_url),
            ("GET", "/api/organizations/{org}/gpu-capacity", self._gpu_capacity),
            ("GET", "/api/api-keys/current", self._current_api_key),
            ("GET", "/api/volumes", self._list_volumes),
            ("POST", "/api/volumes", self._create_volume),
            ("GET", "/api/volumes/by-name/{name}", self._get_volume_by_name),
            ("GET", "/api/volumes/{vid}", self._get_volume),
            ("DELETE", "/api/volumes/{vid}", self._delete_volume),
            ("POST", tb + "/process/execute", self._exec),
            ("POST", tb + "/process/code-run", self._code_run),
            ("GET", tb + "/process/session", self._list_sessions),
            ("POST", tb + "/process/session", self._create_session),
            ("GET", tb + "/process/session/{session}", self._get_session),
            ("DELETE", tb + "/process/session/{session}", self._delete_session),
            ("POST", tb + "/process/session/{session}/exec", self._session_exec),
            ("GET", tb + "/process/session/{session}/command/{cmd}", self._get_command),
            ("GET", tb + "/process/session/{session}/command/{cmd}/logs", self._command_logs),
            ("POST", tb + "/files/bulk-upload", self._bulk_upload),
            ("POST", tb + "/files/bulk-download", self._bulk_download),
            ("GET", tb + "/user-home-dir", self._home_dir),
            ("GET", tb + "/work-dir", self._home_dir),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        return app

    def _preview_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._preview)
        return app

    @web.middleware
    async def _error_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except StandinError as e:
            return _error_response(request, e.status, e.message, e.code)
        except _daytona_rules.ValidationFailed as e:
            return _error_response(request, 400, e.sentences, None)  # type: ignore[arg-type]
        except ValidationError as e:
            sentences = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
            return _error_response(request, 400, sentences, None)  # type: ignore[arg-type]
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _error_response(request, e.status, e.reason, None)

    @web.middleware
    async def _auth_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path.startswith("/api/socket.io"):  # the event stream authenticates in its handshake
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise StandinError(401, "Unauthorized")
        if request.path.startswith("/toolbox/"):
            # The toolbox is reached through the preview proxy, which counts it as activity (apps/proxy).
            record = self.sandboxes.get(request.match_info.get("id", ""))
            if record is not None and request.headers.get(SKIP_ACTIVITY_HEADER, "").lower() != "true":
                record.active_mono = time.monotonic()
                record.toolbox_activity += 1
        return await handler(request)

    # ----- control plane: sandboxes -----

    async def _create(self, request: web.Request) -> web.Response:
        raw = await _json_body(request)
        self.create_bodies.append(raw)
        body = _daytona_rules.parse(CreateSandbox, raw)
        _daytona_rules.check_create_sandbox(raw)
        refusal = _daytona_rules.service_refusal(raw)
        if refusal:
            raise StandinError(400, refusal)
        gpu = body.gpu or 0
        if self._quota_failures:
            self._quota_failures -= 1
            raise StandinError(400, GPU_LIMIT_MESSAGE.format(maximum=self._quota_maximum))
        missing = [name for entry in body.secrets or [] for name in entry.values() if name not in self.vault]
        if missing:
            raise StandinError(404, f"Secret {missing[0]} not found")
        if gpu > 0 and self.gpu_quota is not None:
            in_use = sum(r.gpu for r in self.sandboxes.values())
            if in_use + gpu > self.gpu_quota:
                raise StandinError(400, GPU_LIMIT_MESSAGE.format(maximum=self.gpu_quota))
        if body.name and any(r.name == body.name for r in self.sandboxes.values()):
            raise StandinError(409, f"Sandbox with name {body.name} already exists")
        volumes = [self._resolve_volume_mount(v) for v in body.volumes or []]
        try:
            gpu_type = self.gpus.place(raw.get("gpuType") or [], gpu, spot=bool(body.spot)) if gpu else None
        except _daytona_gpus.NoRunner as e:
            raise StandinError(400, str(e)) from None

        sandbox_id = str(uuid.uuid4())
        assert self._root is not None
        home = self._root / sandbox_id
        home.mkdir()
        now = _now()
        record = SandboxRecord(
            id=sandbox_id,
            name=body.name or sandbox_id,
            home=home,
            preview_token=secrets.token_urlsafe(24),
            labels=dict(body.labels or {}),
            env=dict(body.env or {}),
            secrets={name: secret for entry in body.secrets or [] for name, secret in entry.items()},
            public=bool(body.public),
            target=body.target or "us",
            cpu=body.cpu or 1,
            memory=body.memory or 1,
            disk=body.disk or 3,
            gpu=gpu,
            gpu_type=gpu_type,
            auto_stop_interval=15 if body.auto_stop_interval is None else body.auto_stop_interval,
            auto_archive_interval=10080 if body.auto_archive_interval is None else body.auto_archive_interval,
            auto_delete_interval=-1 if body.auto_delete_interval is None else body.auto_delete_interval,
            volumes=volumes,
            build_info=_build_info(body, now),
            snapshot=body.snapshot,
            user=body.user or "daytona",
            created_at=now,
            ready_at=0.0,
            ports={port: _free_port() for port in self.remap_ports},
            ttl_minutes=body.ttl_minutes or 0,
            spot=bool(body.spot),
        )
        self._schedule_boot(record, building=body.build_info is not None)
        self._create_delay = 0.0
        self.sandboxes[sandbox_id] = record
        await self.events.created(self._dto(record))
        return _json(self._dto(record))

    def _schedule_boot(self, record: SandboxRecord, *, building: bool) -> None:
        """The states a new sandbox goes through; a hung create stays in its first one."""
        if building:
            states = [SandboxState.PENDING_BUILD, SandboxState.BUILDING_SNAPSHOT, SandboxState.STARTING]
        else:
            states = [SandboxState.CREATING, SandboxState.STARTING]
        start = time.monotonic()
        step = self.state_step_seconds
        record.steps = [
            (start + self._create_delay + i * step if i else start, s) for i, s in enumerate(states)
        ]
        record.stored_state = states[0]
        record.ready_at = start + self._create_delay + len(states) * step

    async def _enforce_limits(self) -> None:
        """What the service does on its own: destroy a sandbox past its TTL (whatever its state), stop one
        idle for longer than its auto-stop interval (and so delete it when it is ephemeral)."""
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for record in list(self.sandboxes.values()):
                if (
                    record.ttl_minutes
                    and now - record.created_mono >= record.ttl_minutes * self.minute_seconds
                ):
                    await self._destroy(record)
                    self.ended_by_service.append((record.id, "ttl"))
                elif (
                    record.auto_stop_interval
                    and record.state == SandboxState.STARTED
                    and now - max(record.active_mono, record.ready_at)
                    >= record.auto_stop_interval * self.minute_seconds
                ):
                    await self._stop_record(record)
                    self.ended_by_service.append((record.id, "auto-stop"))

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        labels = json.loads(query["labels"]) if query.get("labels") else {}
        states = set(query.getall("states", []))
        records = [
            r
            for r in self.sandboxes.values()
            if all(r.labels.get(k) == v for k, v in labels.items())
            and (not states or r.state.value in states)
            and query.get("id", r.id) == r.id
            and query.get("name", r.name) == r.name
        ]
        start = int(query.get("cursor") or 0)
        limit = int(query.get("limit") or 100)
        page = records[start : start + limit]
        next_cursor = str(start + limit) if start + limit < len(records) else None
        items = [_list_item(self._dto(r)) for r in page]
        return _json(ListSandboxesResponse(items=items, next_cursor=next_cursor))

    async def _get(self, request: web.Request) -> web.Response:
        return _json(self._dto(self._sandbox(request)))

    async def _delete(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        await self._destroy(record)
        return _json(self._dto(record))

    async def _start(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        if record.state in (SandboxState.STOPPED, SandboxState.ARCHIVED):
            record.stored_state = SandboxState.STARTED
        return _json(self._dto(record))

    async def _stop(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        await self._stop_record(record)
        return _json(self._dto(record))

    async def _stop_record(self, record: SandboxRecord) -> None:
        await asyncio.to_thread(kill_groups, _pgids(record))
        record.sessions.clear()
        old = record.stored_state.value
        record.stored_state = SandboxState.STOPPED
        await self.events.state_changed(self._dto(record), old)
        if record.auto_delete_interval == 0:  # ephemeral: deleted as soon as it stops
            await self._destroy(record)

    async def _replace_labels(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        body = _daytona_rules.parse(SandboxLabels, await _json_body(request))
        assert body is not None
        record.labels = dict(body.labels)
        return _json(SandboxLabels(labels=record.labels))

    async def _set_public(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        record.public = request.match_info["value"] == "true"
        return _json(self._dto(record))

    def _set_interval(self, attribute: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            record = self._sandbox(request)
            setattr(record, attribute, int(request.match_info["value"]))
            return _json(self._dto(record))

        return handler

    async def _last_activity(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        record.last_activity = time.time()
        record.active_mono = time.monotonic()
        return web.Response(status=201)

    async def _toolbox_proxy_url(self, request: web.Request) -> web.Response:
        self._sandbox(request)
        return _json(ToolboxProxyUrl(url=self.toolbox_url))

    async def _preview_url(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        port = _port(request)
        url = f"{self.preview_base}/preview/{record.id}/{port}"
        return _json(PortPreviewUrl(sandbox_id=record.id, url=url, token=record.preview_token))

    async def _signed_preview_url(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        port = _port(request)
        expires_in = int(request.query.get("expiresInSeconds") or 60)
        token = secrets.token_hex(16)
        self._signed[token] = (record.id, port, time.time() + expires_in)
        url = f"{self.preview_base}/signed/{port}-{token}"
        return _json(SignedPortPreviewUrl(sandbox_id=record.id, port=port, token=token, url=url))

    async def _expire_signed_preview_url(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        token = request.match_info["token"]
        if self._signed.get(token, ("", 0, 0.0))[:2] != (record.id, _port(request)):
            raise StandinError(404, "Signed preview URL not found")
        del self._signed[token]
        return web.Response(status=200)

    async def _destroy(self, record: SandboxRecord) -> None:
        await asyncio.to_thread(kill_groups, _pgids(record))
        record.sessions.clear()
        old = record.stored_state.value
        record.stored_state = SandboxState.DESTROYED
        if self.sandboxes.pop(record.id, None) is not None:
            self.gpus.release(record.gpu_type, record.gpu, spot=record.spot)
        await self.events.state_changed(self._dto(record), old)
        self.deleted_ids.append(record.id)
        shutil.rmtree(record.home, ignore_errors=True)

    def _sandbox(self, request: web.Request) -> SandboxRecord:
        key = request.match_info["id"]
        record = self.sandboxes.get(key) or next((r for r in self.sandboxes.values() if r.name == key), None)
        if record is None:
            raise StandinError(404, f"Sandbox with ID or name {key} not found")
        return record

    def _dto(self, record: SandboxRecord) -> Sandbox:
        return Sandbox(
            id=record.id,
            organization_id=ORGANIZATION_ID,
            name=record.name,
            snapshot=record.snapshot,
            user=record.user,
            env=record.env,
            labels=record.labels,
            public=record.public,
            network_block_all=False,
            kvm=False,
            target=record.target,
            cpu=record.cpu,
            gpu=record.gpu,
            gpu_type=record.gpu_type,
            spot=record.spot,
            last_activity_at=record.last_activity_at,
            memory=record.memory,
            disk=record.disk,
            state=record.state,
            desired_state=None,
            error_reason=record.error_reason,
            auto_stop_interval=record.auto_stop_interval,
            auto_archive_interval=record.auto_archive_interval,
            auto_delete_interval=record.auto_delete_interval,
            auto_destroy_at=_plus_minutes(record.created_at, record.ttl_minutes)
            if record.ttl_minutes
            else None,
            volumes=record.volumes,
            build_info=record.build_info,
            created_at=record.created_at,
            updated_at=record.created_at,
            toolbox_proxy_url=self.toolbox_url,
        )

    # ----- control plane: GPUs -----

    async def _gpu_capacity(self, request: web.Request) -> web.Response:
        if request.match_info["org"] != ORGANIZATION_ID:
            raise StandinError(403, "You do not have access to this organization")
        return _json(self.gpus.capacity())

    async def _current_api_key(self, request: web.Request) -> web.Response:
        return _json(_daytona_gpus.current_api_key(ORGANIZATION_ID))

    # ----- control plane: volumes -----

    async def _list_volumes(self, request: web.Request) -> web.Response:
        return _json(list(self.volumes.values()))

    async def _create_volume(self, request: web.Request) -> web.Response:
        body = _daytona_rules.parse(CreateVolume, await _json_body(request))
        assert body is not None
        if any(v.name == body.name for v in self.volumes.values()):
            raise StandinError(409, f"Volume with name {body.name} already exists")
        now = _now()
        volume = VolumeDto(
            id=str(uuid.uuid4()),
            name=body.name,
            organization_id=ORGANIZATION_ID,
            state=VolumeState.READY,
            created_at=now,
            updated_at=now,
            error_reason=None,
        )
        self.volumes[volume.id] = volume
        return _json(volume)

    async def _get_volume_by_name(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        volume = next((v for v in self.volumes.values() if v.name == name), None)
        if volume is None:
            raise StandinError(404, f"Volume with name {name} not found")
        return _json(volume)

    async def _get_volume(self, request: web.Request) -> web.Response:
        return _json(self._volume(request.match_info["vid"]))

    async def _delete_volume(self, request: web.Request) -> web.Response:
        del self.volumes[self._volume(request.match_info["vid"]).id]
        return web.Response(status=200)

    def _volume(self, volume_id: str) -> VolumeDto:
        if volume_id not in self.volumes:
            raise StandinError(404, f"Volume {volume_id} not found")
        return self.volumes[volume_id]

    def _resolve_volume_mount(self, mount: SandboxVolume) -> SandboxVolume:
        volume = self.volumes.get(mount.volume_id) or next(
            (v for v in self.volumes.values() if v.name == mount.volume_id), None
        )
        if volume is None:
            raise StandinError(404, f"Volume {mount.volume_id} not found")
        return SandboxVolume(volume_id=volume.id, mount_path=mount.mount_path, subpath=mount.subpath)

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

    # ----- preview proxy -----

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        """/preview/{id}/{port}/...: token, API key or public. /signed/{port}-{token}/...: URL is the key."""
        parts = request.path.split("/", 4)  # ["", kind, a, b, rest]
        kind = parts[1] if len(parts) > 1 else ""
        if kind == "preview" and len(parts) >= 4 and parts[3].isdigit():
            record = self.sandboxes.get(parts[2])
            if record is None:
                return _proxy_error(404, "sandbox not found")
            port = int(parts[3])
            prefix = f"/preview/{parts[2]}/{parts[3]}"
            allowed = (
                record.public
                or request.headers.get(_preview.PREVIEW_TOKEN_HEADER) == record.preview_token
                or request.headers.get("Authorization") == f"Bearer {self.api_key}"
            )
        elif kind == "signed" and len(parts) >= 3 and "-" in parts[2]:
            port_text, token = parts[2].split("-", 1)
            sandbox_id, signed_port, expires_at = self._signed.get(token, ("", -1, 0.0))
            record = self.sandboxes.get(sandbox_id)
            if record is None or str(signed_port) != port_text or time.time() >= expires_at:
                return _proxy_error(401, "signed preview URL is invalid or expired")
            port = signed_port
            prefix = f"/signed/{parts[2]}"
            allowed = True
        else:
            return _proxy_error(404, "not a preview URL")
        if not allowed:
            return _proxy_error(401, "missing or invalid preview token")
        if request.headers.get(SKIP_ACTIVITY_HEADER, "").lower() != "true":
            record.last_activity = time.time()
            record.active_mono = time.monotonic()
            record.last_activity_at = _now()
            record.activity_updates += 1
        if record.state != SandboxState.STARTED:
            return _proxy_error(502, f"sandbox is {record.state.value}")
        target = request.raw_path[len(prefix) :]
        if not target.startswith("/"):
            target = "/" + target
        assert self._proxy_session is not None
        return await _preview.forward(self._proxy_session, request, record.local_port(port), target)


# ----- helpers -----


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _plus_minutes(stamp: str, minutes: int) -> str:
    from datetime import timedelta

    return (datetime.fromisoformat(stamp) + timedelta(minutes=minutes)).isoformat()


def _pgids(record: SandboxRecord) -> list[int]:
    return [run.pgid for run in record.runs]


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


def _build_info(body: CreateSandbox, now: str) -> BuildInfo | None:
    if body.build_info is None:
        return None
    stamp = datetime.fromisoformat(now)
    return BuildInfo(
        dockerfile_content=body.build_info.dockerfile_content,
        context_hashes=body.build_info.context_hashes,
        created_at=stamp,
        updated_at=stamp,
        snapshot_ref=f"standin/{uuid.uuid4().hex[:12]}",
    )


def _list_item(sandbox: Sandbox) -> SandboxListItem:
    full = sandbox.to_dict()
    aliases = {f.serialization_alias or name for name, f in SandboxListItem.model_fields.items()}
    item = SandboxListItem.from_dict({k: v for k, v in full.items() if k in aliases})
    assert item is not None
    return item


def _session(session_id: str, commands: Mapping[str, CommandRun]) -> Session:
    return Session(
        session_id=session_id,
        commands=[
            Command(id=run.id, command=run.command, exit_code=run.exit_code) for run in commands.values()
        ],
    )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except json.JSONDecodeError as e:
        raise StandinError(400, f"invalid JSON body: {e}") from e


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_to_jsonable(v) for v in value]
    return value.to_dict() if hasattr(value, "to_dict") else value


def _json(value: Any, status: int = 200) -> web.Response:
    def default(obj: object) -> str:
        if isinstance(obj, datetime):
            return obj.isoformat()
        raise TypeError(f"not JSON serializable: {obj!r}")

    return web.Response(
        text=json.dumps(_to_jsonable(value), default=default), status=status, content_type="application/json"
    )


def _error_response(
    request: web.Request, status: int, message: str | list[str], code: str | None
) -> web.Response:
    """The API's error envelope (all-exceptions.filter.ts) or, under /toolbox, the daemon's ErrorResponse."""
    if request.path.startswith("/toolbox/"):
        body: Any = ErrorResponse(
            code=code or _DAEMON_CODES.get(status, "INTERNAL_SERVER_ERROR"),
            message=message if isinstance(message, str) else "; ".join(message),
            method=request.method,
            path=request.path,
            source="DAYTONA_DAEMON",
            status_code=status,
            timestamp=_now(),
        )
    else:
        body = {
            "statusCode": status,
            "source": "DAYTONA_API",
            "code": code or _API_CODES.get(status, "INTERNAL_SERVER_ERROR"),
            "message": message,
            "error": HTTPStatus(status).phrase,
            "path": request.path_qs,
            "timestamp": _now(),
            "method": request.method,
        }
    return _json(body, status=status)


def _proxy_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=f"{message}\n")


def _port(request: web.Request) -> int:
    text = request.match_info["port"]
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise StandinError(400, f"Invalid port {text}")
    return int(text)
