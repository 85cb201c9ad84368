"""A thin front for llama-server, so the guide's clients meet SGLang's shapes and the endpoint's auth.

    python -m sandserve.engines.llamacpp_adapter --host H --port P -- llama-server -m MODEL ...

It starts llama-server (the command after ``--``) on a private port of 127.0.0.1 and answers on H:P:
- every route is passed through, streams chunk by chunk (nothing is buffered);
- chat completions carry ``reasoning_content`` in every message and stream delta, null when there is none
  (as SGLang 0.5.12 sends it: its ``StreamDelta`` keeps the key required, so that the OpenAI SDK's attribute
  access works), and ``usage.prompt_tokens_details`` with ``cached_tokens``;
- a chat request with a JSON response format gets ``enable_thinking: false`` unless it sets it: llama.cpp's
  grammar lets a ``<think>`` block come first, which its output parser then rejects with HTTP 500;
- SGLang's native ``/generate`` (text, sampling_params with regex / ebnf / json_schema, stream) and
  ``/health_generate`` (a real one-token generation) are translated to llama-server's ``/completion``;
- the agent APIs (``/v1/responses``, ``/v1/messages``) pass through, with the request rewrites of
  ``llamacpp_agents.py`` (a Responses JSON schema), and auth refusals on Messages in Anthropic's shape;
- credentials come from the environment, never the command line: ``SANDSERVE_ACCESS_TOKEN`` is required on
  every request in the header ``SANDSERVE_TOKEN_HEADER`` names (the local provider names the Daytona preview
  proxy's, as that proxy checks it), and
  ``SANDSERVE_API_KEY`` as ``Authorization: Bearer`` (as SGLang's ``--api-key`` does: health routes stay
  open). ``SANDSERVE_INSIDE_KEY``, sent as ``Authorization: Bearer``, stands in for the token: it is what code
  run beside the server gets, as code inside a Daytona sandbox reaches the server on localhost with no token.
  llama-server itself gets a random key of its own, so its private port serves no one else;
- generation requests wait for a slot by priority (admission.py): llama-server itself serves first come,
  first served; a person's request preempts running batch requests, sent again later (preemption.py), and
  batch prompts are read a few tokens a step (prompt_feed.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from sandserve.engines.adapter_auth import auth_middleware
from sandserve.engines.admission import AdmissionQueue, slots_from_command
from sandserve.engines.base import NATIVE_GENERATE_ROUTE
from sandserve.engines.chat_collect import as_stream, collect_chat
from sandserve.engines.llamacpp_agents import REQUEST_REWRITES
from sandserve.engines.llamacpp_native import BadRequest, bad_request, completion_body, generate_answer
from sandserve.engines.preemption import COLLECT, FIRST_TOKEN, SLOT, admission_middleware
from sandserve.engines.prompt_feed import PromptFeed
from sandserve.errors import SandserveError

ACCESS_TOKEN_ENV = "SANDSERVE_ACCESS_TOKEN"
#: The header the access token comes in: the provider's choice (the local one emulates Daytona's).
TOKEN_HEADER_ENV = "SANDSERVE_TOKEN_HEADER"
API_KEY_ENV = "SANDSERVE_API_KEY"
INSIDE_KEY_ENV = "SANDSERVE_INSIDE_KEY"
LISTENING_LINE = "sandserve adapter: listening on"
#: llama-server's niceness. Its threads keep every core they were given busy while it works; at the same
#: priority, the adapter and the clients on the machine (a person's request, the batch runner) waited for a
#: core behind them, which showed in a person's first token while a batch ran. Alone on the machine it runs
#: as fast as at 0 (nothing else asks for the cores). Measured on 2 cores, SmolLM2, 24 people at 0.5/s
#: beside a low-priority batch (two runs each): TTFT p90 207 and 215 ms at 0, 159 and 151 ms at 10, the
#: batch at 191-210 and 203-214 tokens/s.
LLAMA_SERVER_NICE = 10
#: Seconds a stopping adapter waits for the handlers still running before cancelling them (aiohttp: 60).
SHUTDOWN_TIMEOUT_S = 1.0
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "accept-encoding",  # answers are read and rewritten as plain bytes
    }
)
_NOT_RETURNED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
_JSON_FORMATS = ("json_schema", "json_object")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The app's token header: never passed on to llama-server.
TOKEN_HEADER = web.AppKey("token_header", str)


class Upstream:
    """llama-server on its private port, with the private key every forwarded request carries."""

    def __init__(self, port: int, key: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            # A connection per request: llama-server's HTTP library (cpp-httplib) closes a kept-alive
            # connection after a few seconds idle or a few requests, and a request written into one it has
            # just closed fails ("Can not write request body"). A new local connection costs far less.
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,
            )
        return self.session


def build_app(
    upstream: Upstream,
    access_token: str | None,
    api_key: str | None,
    inside_key: str | None = None,
    admission: AdmissionQueue | None = None,
    token_header: str | None = None,
) -> web.Application:
    """``access_token``, when set, is required in the ``token_header`` header of every request."""
    if access_token and not token_header:
        raise SandserveError(
            f"The adapter has an access token but no header to read it from: set {TOKEN_HEADER_ENV}."
        )
    feed = (
        PromptFeed(admission.normal_present, admission.pinned_slots)
        if admission is not None
        else PromptFeed(lambda: False)
    )
    middlewares = [auth_middleware(access_token, token_header, api_key, inside_key)]
    if admission is not None:
        middlewares.append(admission_middleware(admission, feed))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 * 1024)
    app[TOKEN_HEADER] = token_header or ""
    if admission is not None:
        app.router.add_get("/metrics", _metrics(upstream, admission, feed))
    app.router.add_post("/v1/chat/completions", _chat(upstream, feed))
    app.router.add_post(NATIVE_GENERATE_ROUTE, _generate(upstream))
    app.router.add_route("*", "/health_generate", _health_generate(upstream, feed))
    app.router.add_route("*", "/{tail:.*}", _passthrough(upstream))

    async def close(_: web.Application) -> None:
        if upstream.session is not None:
            await upstream.session.close()

    app.on_cleanup.append(close)
    return app


# --- pass-through ----------------------------------------------------------------------------------------


def _passthrough(upstream: Upstream) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if body and (rewrite := REQUEST_REWRITES.get(request.path)) is not None:
            body = rewrite(body)
        return await _forward(upstream, request, request.method, request.path_qs, body or None, None)

    return handler


async def _forward(
    upstream: Upstream,
    request: web.Request,
    method: str,
    target: str,
    body: bytes | None,
    rewrite: Callable[[dict[str, Any]], None] | None,
) -> web.StreamResponse:
    """Send the request on; stream the answer back. ``rewrite`` edits each JSON answer or SSE chunk."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    if token_header := request.app[TOKEN_HEADER]:
        headers = {k: v for k, v in headers.items() if k.lower() != token_header.lower()}
    headers.update(upstream.headers)
    try:
        answer = await upstream.client().request(method, upstream.base + target, data=body, headers=headers)
    except aiohttp.ClientError as exc:
        return _loading(exc)
    async with answer:
        kind = answer.headers.get("Content-Type", "")
        whole = request.get(COLLECT, False) and kind.startswith("text/event-stream")  # asked for whole
        if rewrite is not None and answer.status == 200 and (whole or kind.startswith("application/json")):
            status, data = (
                await collect_chat(answer.content) if whole else (200, json.loads(await answer.read()))
            )
            if status == 200:
                rewrite(data)
            return web.json_response(data, status=status)
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for name, value in answer.headers.items():
            if name.lower() not in _NOT_RETURNED:
                response.headers.add(name, value)
        await response.prepare(request)
        streaming = kind.startswith("text/event-stream")
        first_token = request.get(FIRST_TOKEN) if streaming and answer.status == 200 else None
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientPayloadError):
            if streaming and rewrite is not None:
                async for line in answer.content:  # one SSE line at a time: written as soon as it comes
                    await response.write(_rewrite_sse_line(line, rewrite))
                    if first_token is not None and line.startswith(b"data: {"):
                        first_token()
            else:
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                    if first_token is not None and chunk.strip():
                        first_token()
            await response.write_eof()
        return response


def _rewrite_sse_line(line: bytes, rewrite: Callable[[dict[str, Any]], None]) -> bytes:
    if not line.startswith(b"data: {"):
        return line
    try:
        chunk = json.loads(line[len(b"data: ") :])
    except ValueError:
        return line
    if not isinstance(chunk, dict):
        return line
    rewrite(chunk)
    try:
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (\\ud800) it sent escaped: keep it escaped
        return b"data: " + json.dumps(chunk).encode() + b"\n"


def _loading(exc: BaseException) -> web.Response:
    error = {
        "code": 503,
        "message": f"Loading model (llama-server does not answer yet: {exc})",
        "type": "unavailable",
    }
    return web.json_response({"error": error}, status=503)


def _metrics(upstream: Upstream, admission: AdmissionQueue, feed: PromptFeed) -> Handler:
    """llama-server's /metrics with the admission queue counted as deferred, and its own gauges after it;
    the tokens the prompt feed sampled are not counted as generated."""

    async def handler(request: web.Request) -> web.StreamResponse:
        fed = feed.requests  # before llama-server counts: never more than its figure holds
        try:
            async with upstream.client().get(upstream.base + "/metrics", headers=upstream.headers) as answer:
                text = await answer.text()
                status = answer.status
        except aiohttp.ClientError as exc:
            return _loading(exc)
        if status == 200:
            text = admission.merged_metrics(feed.uncounted(text, fed))
        return web.Response(status=status, text=text, content_type="text/plain")

    return handler


# --- chat: SGLang's shapes -------------------------------------------------------------------------------


def sglang_shapes(data: dict[str, Any]) -> None:
    """``reasoning_content`` in every message and delta (null when empty); cached tokens in the usage."""
    choices = data.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            continue
        for part in ("message", "delta"):
            if isinstance(choice.get(part), dict):
                choice[part].setdefault("reasoning_content", None)
                if not choice[part]["reasoning_content"]:
                    choice[part]["reasoning_content"] = None
    usage = data.get("usage")
    if isinstance(usage, dict):
        details = usage.get("prompt_tokens_details")
        if not isinstance(details, dict):
            usage["prompt_tokens_details"] = details = {}
        details.setdefault("cached_tokens", 0)


def _chat(upstream: Upstream, feed: PromptFeed) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict) and (body.get("response_format") or {}).get("type") in _JSON_FORMATS:
            kwargs = body.setdefault("chat_template_kwargs", {})
            if isinstance(kwargs, dict):
                kwargs.setdefault("enable_thinking", False)
                raw = json.dumps(body).encode()
        if isinstance(body, dict) and SLOT in request:
            slot = body.setdefault("id_slot", request[SLOT])  # admission.py: AdmissionQueue.pin says why
            if request.get(COLLECT):
                # A batch request: its prompt goes in short steps (prompt_feed.py), and it is fetched as a
                # stream, which stops when its connection closes (chat_collect.py).
                await feed.feed(upstream.client(), upstream.base, upstream.headers, body, slot)
                raw = as_stream(body)
            else:
                feed.forget(slot)
                raw = json.dumps(body).encode()
        return await _forward(upstream, request, "POST", request.path_qs, raw, sglang_shapes)

    return handler


# --- SGLang's native routes ------------------------------------------------------------------------------


def _generate(upstream: Upstream) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        try:
            sglang = json.loads(await request.read())
            if not isinstance(sglang, dict):
                raise BadRequest("The request body must be a JSON object.")
            body = completion_body(sglang)
        except (ValueError, BadRequest) as exc:
            return bad_request(str(exc))
        stream = bool(sglang.get("stream"))
        body["stream"] = stream
        rid = uuid.uuid4().hex
        try:
            answer = await upstream.client().post(
                upstream.base + "/completion", json=body, headers=upstream.headers
            )
        except aiohttp.ClientError as exc:
            return _loading(exc)
        async with answer:
            if answer.status != 200:
                return web.Response(
                    status=answer.status, body=await answer.read(), content_type="application/json"
                )
            if not stream:
                done = await answer.json()
                return web.json_response(generate_answer(done, done.get("content", ""), rid, started))
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            text = ""
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientPayloadError):
                async for line in answer.content:
                    try:
                        piece = json.loads(line[len(b"data: ") :]) if line.startswith(b"data: {") else None
                    except ValueError:
                        piece = None
                    if not isinstance(piece, dict):
                        continue
                    text += piece.get("content", "")
                    # SGLang streams the text so far (cumulative), not the new piece.
                    await response.write(
                        b"data: " + json.dumps(generate_answer(piece, text, rid, started)).encode() + b"\n\n"
                    )
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
            return response

    return handler


def _health_generate(upstream: Upstream, feed: PromptFeed) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        probe = {"prompt": "Hi", "n_predict": 1, "cache_prompt": False}
        feed.free_slot_taken()
        try:
            async with upstream.client().post(
                upstream.base + "/completion", json=probe, headers=upstream.headers
            ) as answer:
                await answer.read()
                return web.Response(status=200 if answer.status == 200 else 503)
        except aiohttp.ClientError:
            return web.Response(status=503)

    return handler


# --- the process -----------------------------------------------------------------------------------------


def _in_llama_servers_process() -> None:
    """llama-server gets SIGKILL when the adapter dies, however it dies (kill -9 too): never an orphan. It
    runs at a lower scheduling priority (``LLAMA_SERVER_NICE``)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.nice(LLAMA_SERVER_NICE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve(host: str, port: int, command: list[str]) -> int:
    """Start llama-server, answer in front of it, and end with it (its exit code is ours)."""
    access_token = os.environ.get(ACCESS_TOKEN_ENV) or None
    token_header = os.environ.get(TOKEN_HEADER_ENV) or None
    api_key = os.environ.get(API_KEY_ENV) or None
    inside_key = os.environ.get(INSIDE_KEY_ENV) or None
    private_key = secrets.token_urlsafe(24)
    private_port = free_port()
    ours = (ACCESS_TOKEN_ENV, TOKEN_HEADER_ENV, API_KEY_ENV, INSIDE_KEY_ENV)
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env["LLAMA_API_KEY"] = private_key
    server = await asyncio.create_subprocess_exec(
        *command,
        "--host",
        "127.0.0.1",
        "--port",
        str(private_port),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=_in_llama_servers_process,
    )
    slots = slots_from_command(command)
    admission = AdmissionQueue(slots) if slots else None
    app = build_app(
        Upstream(private_port, private_key), access_token, api_key, inside_key, admission, token_header
    )
    # Stopping, the handlers still running are cancelled after this long: the answers they forward would
    # end anyway (llama-server stops with us), and llama-server does not stop while their connections are
    # open, which the handlers keep open while they wait on it.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        sys.stderr.write(f"sandserve adapter: cannot listen on {host}:{port}: {exc}\n")
        server.terminate()
        await server.wait()
        return 98
    sys.stderr.write(f"{LISTENING_LINE} {host}:{port}, llama-server on 127.0.0.1:{private_port}\n")
    sys.stderr.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    waiting = asyncio.ensure_future(server.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    await runner.cleanup()
    if server.returncode is None:
        server.terminate()
    code = await server.wait()
    stopping.cancel()
    return 0 if stop.is_set() else code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- llama-server and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the llama-server command after --")
    return asyncio.run(serve(args.host, args.port, command))


if __name__ == "__main__":
    sys.exit(main())
