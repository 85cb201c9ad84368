"""A local OpenAI-compatible server that misbehaves on request, for testing clients.

It runs in a background thread with its own event loop, so tests can drive it with ``asyncio.run`` in the main
thread and subprocesses can reach it too. Each request is identified by a key (the body's ``user``, else its
``rid``, else its prompt); ``script(key, actions...)`` sets what the 1st, 2nd, ... attempt with that key get,
and ``default_action`` answers everything else.

Actions: "ok", "slow" (answers after ``slow_s``), "429" (with ``Retry-After: retry_after``), "500", "502",
"503", "400" (an OpenAI-style error naming the key), "drop" (closes the connection without answering),
"malformed" (200 with a truncated JSON body), "down" (answers, then the server is gone: new connections are
refused and requests on open connections dropped).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from typing import Any, NoReturn

from aiohttp import web


class FaultServer:
    def __init__(
        self,
        *,
        default_action: str = "ok",
        slow_s: float = 0.05,
        retry_after: str = "0",
        token: str | None = None,
    ) -> None:
        self.default_action = default_action
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.token = token
        """When set, requests must carry it as x-daytona-preview-token (else 401)."""
        self.scripts: dict[str, list[str]] = {}
        self.attempts: Counter[str] = Counter()
        self.arrivals: list[str] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._answered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._down = False
        self._thread: threading.Thread | None = None
        self.url = ""

    def script(self, key: str, *actions: str) -> None:
        self.scripts[key] = list(actions)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FaultServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_site())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="faultserver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop_site(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        for path in ("/v1/chat/completions", "/v1/completions", "/generate"):
            app.router.add_post(path, self._complete)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def _stop_site(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers ------------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("x-daytona-preview-token") == self.token

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "missing token"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "test-model", "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "missing token"}}, status=401)
        if self._down:
            _drop(request)
        body = await request.json()
        key = request_key(body)
        self.arrivals.append(key)
        self.attempts[key] += 1
        script = self.scripts.get(key, [])
        attempt = self.attempts[key]
        action = script[attempt - 1] if attempt <= len(script) else self.default_action
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self._act(action, request, body, key)
        finally:
            self._in_flight -= 1

    async def _act(
        self, action: str, request: web.Request, body: dict[str, Any], key: str
    ) -> web.StreamResponse:
        if action == "slow":
            await asyncio.sleep(self.slow_s)
            action = "ok"
        if action == "ok":
            return web.json_response(self._completion(request.path, body, key))
        if action == "429":
            return _openai_error(429, "rate limited", headers={"Retry-After": self.retry_after})
        if action in ("500", "502", "503"):
            return _openai_error(int(action), "server trouble")
        if action == "400":
            return _openai_error(400, f"bad request {key}", kind="invalid_request_error")
        if action == "malformed":
            return web.Response(body=b'{"id": "cmpl-1", "choices": [{"mess', content_type="application/json")
        if action == "drop":
            _drop(request)
        if action == "down":
            self._down = True
            assert self._site is not None
            await self._site.stop()  # closes the listening socket only
            return web.json_response(self._completion(request.path, body, key))
        raise ValueError(f"unknown fault action {action!r}")

    def _completion(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        self._answered += 1
        prompt_tokens = len(prompt_of(body)) // 4 + 1
        # Every other answer has prompt_tokens_details null, as some servers send.
        details = {"cached_tokens": 3} if self._answered % 2 else None
        if path == "/generate":
            return {
                "text": f"answer to {key}",
                "meta_info": {
                    "id": f"gen-{key}",
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": 7,
                    "cached_tokens": 3,
                },
            }
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 7,
            "total_tokens": prompt_tokens + 7,
            "prompt_tokens_details": details,
        }
        if path == "/v1/completions":
            return {
                "id": f"cmpl-{key}",
                "object": "text_completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "text": f"answer to {key}", "finish_reason": "stop"}],
                "usage": usage,
            }
        return {
            "id": f"chatcmpl-{key}",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer to {key}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }


def _drop(request: web.Request) -> NoReturn:
    assert request.transport is not None
    request.transport.close()
    raise asyncio.CancelledError  # nothing more to write on a closed connection


def request_key(body: dict[str, Any]) -> str:
    return str(body.get("user") or body.get("rid") or prompt_of(body))


def prompt_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "".join(str(message.get("content", "")) for message in body["messages"])
    return str(body.get("prompt") or body.get("text") or "")


def _openai_error(
    status: int, message: str, *, kind: str = "server_error", headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status=status,
        headers=headers,
    )
