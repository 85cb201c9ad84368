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
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from daytona_api_client import (
    BuildInfo,
    CreateSandbox,
    ListSandboxesResponse,
    PortPreviewUrl,
    Sandbox,
    SandboxLabels,
    SandboxListItem,
    SandboxState,
    SandboxVolume,
    SignedPortPreviewUrl,
    ToolboxProxyUrl,
)
from pydantic import ValidationError

from . import _daytona_events, _daytona_gpus, _daytona_rules, _preview
from ._daytona_http import (
    ORGANIZATION_ID,
    StandinError,
    _error_response,
    _free_port,
    _json,
    _json_body,
    _listening_socket,
    _now,
    _plus_minutes,
    _port,
    _proxy_error,
)
from ._daytona_storage import DEFAULT_MAX_SNAPSHOT_SIZE_GB, SGLANG_IMAGE_SIZE_GB, StorageRoutes, copy_tree
from ._daytona_toolbox import ToolboxRoutes
from ._procs import CommandRun, kill_groups

GPU_LIMIT_MESSAGE = (
    "Total GPU limit exceeded. Maximum allowed: {maximum}.\n"
    "To increase concurrency limits, upgrade your organization's Tier by visiting "
    "https://app.daytona.io/dashboard/limits."
)


_BOOT_STATES = frozenset(
    {
        SandboxState.PENDING_BUILD,
        SandboxState.BUILDING_SNAPSHOT,
        SandboxState.CREATING,
        SandboxState.STARTING,
    }
)
SKIP_ACTIVITY_HEADER = "X-Daytona-Skip-Last-Activity-Update"


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


class DaytonaStandin(ToolboxRoutes, StorageRoutes):
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
        capture_seconds: float = 0.1,
        max_snapshots: int | None = None,
        max_snapshot_size_gb: float = DEFAULT_MAX_SNAPSHOT_SIZE_GB,
        image_size_gb: float = SGLANG_IMAGE_SIZE_GB,
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
            capture_seconds: how long a sandbox stays "snapshotting" (the runner's commit and push).
            max_snapshots: the organisation's snapshot count quota (None: no limit).
            max_snapshot_size_gb: the largest snapshot the organisation may hold.
            image_size_gb: the image layers a capture carries besides the sandbox's files.
        """
        self.capture_seconds = capture_seconds
        self.max_snapshots = max_snapshots
        self.max_snapshot_size_gb = max_snapshot_size_gb
        self.image_size_gb = image_size_gb
        self.snapshots: dict[str, Any] = {}
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
        self.volumes: dict[str, Any] = {}
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
            ("POST", sb + "/snapshot", self._create_sandbox_snapshot),
            ("GET", "/api/snapshots", self._list_snapshots),
            ("GET", "/api/snapshots/{sid}", self._get_snapshot),
            ("DELETE", "/api/snapshots/{sid}", self._delete_snapshot),
            ("POST", "/api/snapshots/{sid}/activate", self._activate_snapshot),
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
        snapshot = self.snapshot_for_create(body.snapshot) if body.snapshot else None
        gpu = snapshot.dto.gpu if snapshot else body.gpu or 0
        # From a snapshot, the sandbox gets the snapshot's GPU (count and type), whatever the body says.
        refusal = _daytona_rules.service_refusal({**raw, "gpu": gpu})
        if refusal:
            raise StandinError(400, refusal)
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
            preference = _gpu_preference(snapshot, raw)
            gpu_type = self.gpus.place(preference, gpu, spot=bool(body.spot)) if gpu else None
        except _daytona_gpus.NoRunner as e:
            raise StandinError(400, str(e)) from None

        sandbox_id = str(uuid.uuid4())
        assert self._root is not None
        home = self._root / sandbox_id
        if snapshot is not None and snapshot.files is not None:
            copy_tree(snapshot.files, home)
        else:
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


def _pgids(record: SandboxRecord) -> list[int]:
    return [run.pgid for run in record.runs]


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


def _gpu_preference(snapshot: Any, raw: dict[str, Any]) -> list[str]:
    """The GPU types a new sandbox may get, in order: its snapshot's one type, else the body's preference
    list."""
    if snapshot is not None:
        return [snapshot.dto.gpu_type.value] if snapshot.dto.gpu_type else []
    return list(raw.get("gpuType") or [])
