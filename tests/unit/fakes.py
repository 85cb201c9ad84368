"""An in-process fake provider and fake engine, so the pipeline (`serve.lifecycle.up`) runs with no process.

The fake "server" is a script (log lines at given moments, when it can generate, when it dies) played by a
real HTTP server on a thread of the test process, on 127.0.0.1: the pipeline polls its log and exit code
through the ``Provider`` interface and asks it for a real generation over HTTP, exactly as it does a
llama-server or an SGLang server. Nothing is started outside the test process.

The provider registers itself through the ``Provider`` base class (as every provider does); the engine is
handed to the pipeline by the ``fake_pipeline`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from sandserve import AuthMode, ServeSpec
from sandserve.engines.base import Engine, Launch, LogSignature, ReadinessProbe
from sandserve.providers.base import Exposure, Provider
from sandserve.providers.handles import LocalHandle
from sandserve.results import Capabilities, ServerInfo

FAKE = "fake"
TOKEN_HEADER = "x-fake-token"


# --- the engine ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeEngine(Engine):
    """An engine in the pipeline's sense: a launch command, a readiness request that needs a real generation,
    log phases, fatal signatures and a capacity summary. Its log dialect is its own (``fake: ...``). It
    registers itself by name, as every engine does."""

    name = FAKE
    label = "Fake"
    owned_by = FAKE
    capabilities = Capabilities(regex=True, ebnf=True)
    readiness = ReadinessProbe("POST", "/generate", {"text": "ping", "max_new_tokens": 1})
    info_path = "/server_info"
    phase_patterns = (
        ("weights loaded", re.compile(r"fake: weights loaded")),
        ("kv cache allocated", re.compile(r"fake: kv pool of \d+ tokens")),
        ("listening", re.compile(r"fake: listening")),
    )
    signatures = (
        LogSignature.of(r"fake: out of memory", "the fake GPU ran out of memory", "Use a bigger fake GPU."),
        LogSignature.of(r"fake: gated", "the model is gated", "Set HF_TOKEN."),
    )

    def launch(self, spec: ServeSpec, *, host: str, port: int, api_key: str | None) -> Launch:
        argv = ["fake-server", "--model", spec.model, "--host", host, "--port", str(port)]
        if api_key:
            argv += ["--api-key", api_key]
        return Launch(argv=argv, env={"FAKE_ENV": "1"}, secrets=frozenset({api_key} if api_key else ()))

    def kv_pool_tokens(self, log_text: str) -> int | None:
        found = re.findall(r"fake: kv pool of (\d+) tokens", log_text)
        return int(found[-1]) if found else None

    def summarise_info(self, data: dict[str, Any]) -> ServerInfo:
        return ServerInfo(
            max_total_num_tokens=data.get("max_total_num_tokens"), extra={"slots": data.get("slots")}
        )


FAKE_ENGINE = FakeEngine()


# --- the script a fake server plays -------------------------------------------------------------------------


@dataclass
class Script:
    """What a fake server does, in seconds after it is started."""

    log: list[tuple[float, str]] = field(default_factory=list)
    generates_after: float | None = 0.0
    """When a generation first succeeds; None: never (the port answers, the model does not)."""
    refuses_first: int = 0
    """Generation requests refused (503, still loading) before any succeeds, whatever the time."""
    dies_at: float | None = None
    exit_code: int = 1
    info: dict[str, Any] = field(default_factory=lambda: {"max_total_num_tokens": 4096, "slots": 2})


def healthy_boot(kv_tokens: int = 8192, ready_at: float = 0.01) -> Script:
    """A boot that logs its phases in order within its first 6 ms, and generates from ``ready_at``."""
    return Script(
        log=[
            (0.0, "fake: starting\n"),
            (0.002, "fake: weights loaded\n"),
            (0.004, f"fake: kv pool of {kv_tokens} tokens\n"),
            (0.006, "fake: listening\n"),
        ],
        generates_after=ready_at,
    )


class FakeServer:
    """The server a fake sandbox runs: a real HTTP server on a thread, playing a ``Script``."""

    def __init__(self, script: Script, token: str | None) -> None:
        self.script = script
        self.token = token
        self.started_at: float | None = None
        self.stopped = False
        self.generations = 0
        self.refused_early = 0
        self.unauthorised = 0
        self.launch: Launch | None = None
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def start(self, launch: Launch) -> None:
        self.launch = launch
        self.started_at = time.monotonic()

    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def alive(self) -> bool:
        if self.started_at is None or self.stopped:
            return False
        return self.script.dies_at is None or self.elapsed() < self.script.dies_at

    def log_text(self) -> str:
        if self.started_at is None:
            return ""
        return "".join(line for at, line in self.script.log if at <= self.elapsed())

    def exit_code(self) -> int | None:
        if self.stopped:
            return -15
        if self.script.dies_at is not None and self.started_at is not None and not self.alive():
            return self.script.exit_code
        return None

    def can_generate(self) -> bool:
        ready_at = self.script.generates_after
        if self.refused_early < self.script.refuses_first:
            return False
        return self.alive() and ready_at is not None and self.elapsed() >= ready_at

    def stop(self) -> None:
        self.stopped = True
        self._http.shutdown()
        self._http.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if server.token is None or self.headers.get(TOKEN_HEADER) == server.token:
                    return True
                server.unauthorised += 1
                self._answer(401, {"error": "missing or wrong token"})
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path == "/health":  # the port answers long before the model can generate
                    self._answer(200 if server.alive() else 503, {"status": "ok"})
                elif self.path == FAKE_ENGINE.info_path and server.alive():
                    self._answer(200, server.script.info)
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self._authorised():
                    return
                if self.path != "/generate" or not body.get("text"):
                    self._answer(404, {"error": "not found"})
                elif server.can_generate():
                    server.generations += 1
                    self._answer(200, {"text": " pong", "meta_info": {"completion_tokens": 1}})
                else:
                    server.refused_early += 1
                    self._answer(503, {"error": "model is still loading"})

        return Handler


# --- the provider -------------------------------------------------------------------------------------------


class FakeProvider(Provider[LocalHandle]):
    """A provider whose sandboxes are ``FakeServer``s in this process. ``script`` is what the next sandbox
    plays; every server it made stays in ``servers`` (by sandbox id) for the test to inspect."""

    name = FAKE
    poll_interval = 0.01
    keeps_failed_sandboxes = False
    offers_gpus = False  # nothing here is a (paid) GPU
    handle_type = LocalHandle  # a port and, in auth mode token, the token

    script: ClassVar[Script] = healthy_boot()
    servers: ClassVar[dict[str, FakeServer]] = {}
    deleted: ClassVar[list[str]] = []

    def preflight(self, spec: ServeSpec) -> None:
        pass

    def create(self, spec: ServeSpec, endpoint_id: str) -> LocalHandle:
        token = f"token-{endpoint_id}" if spec.auth is AuthMode.TOKEN else None
        server = FakeServer(type(self).script, token)
        FakeProvider.servers[endpoint_id] = server
        return LocalHandle(self.name, endpoint_id, port=server.port, token=token)

    def server_port(self, handle: LocalHandle) -> int:
        assert handle.port is not None
        return handle.port

    def start(self, handle: LocalHandle, launch: Launch) -> None:
        self._server(handle).start(launch)

    def read_log(self, handle: LocalHandle) -> str:
        return self._server(handle).log_text()

    def exit_code(self, handle: LocalHandle) -> int | None:
        return self._server(handle).exit_code()

    def expose(self, handle: LocalHandle, spec: ServeSpec) -> Exposure:
        headers = {TOKEN_HEADER: handle.token} if handle.token else {}
        return Exposure(url=f"http://127.0.0.1:{handle.port}", headers=headers)

    def is_running(self, handle: LocalHandle) -> bool:
        server = FakeProvider.servers.get(handle.sandbox_id)
        return server is not None and server.alive()

    def delete(self, handle: LocalHandle) -> None:
        server = FakeProvider.servers.get(handle.sandbox_id)
        if server is not None and not server.stopped:
            server.stop()
        FakeProvider.deleted.append(handle.sandbox_id)

    def _server(self, handle: LocalHandle) -> FakeServer:
        return FakeProvider.servers[handle.sandbox_id]


def fake_spec(**changes: Any) -> ServeSpec:
    """A spec the fake provider and engine serve (a ServeSpec like any other, with their names)."""
    fields: dict[str, Any] = {
        "model": "fake-org/fake-model",
        "served_name": "fake-model",
        "engine": FAKE,
        "provider": FAKE,
        "boot_timeout": 5.0,
        **changes,
    }
    return ServeSpec(**fields)


def stop_every_server() -> None:
    for server in FakeProvider.servers.values():
        if not server.stopped:
            server.stop()
    FakeProvider.servers.clear()
    FakeProvider.deleted.clear()
