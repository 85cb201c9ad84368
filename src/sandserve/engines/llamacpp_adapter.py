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
- low-priority requests (batch work) are answered by a second llama-server that gets a core only while
  nothing else wants one (batch_server.py, lanes.py); at each server, generation requests wait for a slot by
  priority (admission.py): llama-server itself serves first come, first served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from sandserve.engines.adapter_auth import auth_middleware
from sandserve.engines.admission import slots_from_command
from sandserve.engines.base import NATIVE_GENERATE_ROUTE
from sandserve.engines.batch_server import BatchServer, batch_niceness
from sandserve.engines.lanes import FIRST_TOKEN, UPSTREAM, Lanes, lanes_middleware
from sandserve.engines.llamacpp_agents import REQUEST_REWRITES
from sandserve.engines.llamacpp_native import BadRequest, bad_request, completion_body, generate_answer
from sandserve.engines.merged_servers import merged_metrics, merged_slots
from sandserve.engines.upstream import Upstream, die_with_the_adapter, start_llama_server
from sandserve.errors import SandserveError

ACCESS_TOKEN_ENV = "SANDSERVE_ACCESS_TOKEN"
#: The header the access token comes in: the provider's choice (the local one emulates Daytona's).
TOKEN_HEADER_ENV = "SANDSERVE_TOKEN_HEADER"
API_KEY_ENV = "SANDSERVE_API_KEY"
INSIDE_KEY_ENV = "SANDSERVE_INSIDE_KEY"
LISTENING_LINE = "sandserve adapter: listening on"
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


def build_app(
    upstream: Upstream,
    access_token: str | None,
    api_key: str | None,
    inside_key: str | None = None,
    lanes: Lanes | None = None,
    token_header: str | None = None,
) -> web.Application:
    """``access_token``, when set, is required in the ``token_header`` header of every request."""
    if access_token and not token_header:
        raise SandserveError(
            f"The adapter has an access token but no header to read it from: set {TOKEN_HEADER_ENV}."
        )
    middlewares = [auth_middleware(access_token, token_header, api_key, inside_key)]
    if lanes is not None:
        middlewares.append(lanes_middleware(lanes))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 * 1024)
    app[TOKEN_HEADER] = token_header or ""
    if lanes is not None:
        app.router.add_get("/metrics", _metrics(upstream, lanes))
        app.router.add_get("/slots", _slots(upstream, lanes))
    app.router.add_post("/v1/chat/completions", _chat(upstream))
    app.router.add_post(NATIVE_GENERATE_ROUTE, _generate(upstream))
    app.router.add_route("*", "/health_generate", _health_generate(upstream))
    app.router.add_route("*", "/{tail:.*}", _passthrough(upstream))

    async def close(_: web.Application) -> None:
        await upstream.close()

    app.on_cleanup.append(close)
    return app


# --- pass-through ----------------------------------------------------------------------------------------


def _passthrough(upstream: Upstream) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if body and (rewrite := REQUEST_REWRITES.get(request.path)) is not None:
            body = rewrite(body)
        return await _forward(
            request.get(UPSTREAM, upstream), request, request.method, request.path_qs, body or None, None
        )

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
        if rewrite is not None and answer.status == 200 and kind.startswith("application/json"):
            data = json.loads(await answer.read())
            rewrite(data)
            return web.json_response(data)
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


async def _get(upstream: Upstream, route: str) -> tuple[int, str]:
    async with upstream.client().get(upstream.base + route, headers=upstream.headers) as answer:
        return answer.status, await answer.text()


async def _from_both(upstream: Upstream, lanes: Lanes, route: str) -> tuple[int, str, str | None]:
    """The people's llama-server's status and answer to ``GET route``, and the batch's answer where that
    server runs and answers it with 200 (None otherwise). Raises aiohttp.ClientError where the people's does
    not answer."""
    status, text = await _get(upstream, route)
    batch = lanes.batch_server.running if lanes.batch_server is not None else None
    if status != 200 or batch is None:
        return status, text, None
    with contextlib.suppress(aiohttp.ClientError):
        batch_status, batch_text = await _get(batch, route)
        if batch_status == 200:
            return status, text, batch_text
    return status, text, None


def _metrics(upstream: Upstream, lanes: Lanes) -> Handler:
    """The endpoint's /metrics: its llama-servers' together (merged_servers.py), the requests waiting in the
    admission queues counted as deferred, and the queues' own gauges after them."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            status, text, batch_text = await _from_both(upstream, lanes, "/metrics")
        except aiohttp.ClientError as exc:
            return _loading(exc)
        if status != 200:
            return web.Response(status=status, text=text, content_type="text/plain")
        if batch_text is not None:
            text = merged_metrics(text, batch_text)
        return web.Response(text=lanes.endpoint_metrics(text), content_type="text/plain")

    return handler


def _slots(upstream: Upstream, lanes: Lanes) -> Handler:
    """The endpoint's /slots: the people's llama-server's, then the batch's (numbered after them)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            status, text, batch_text = await _from_both(upstream, lanes, request.path_qs)
        except aiohttp.ClientError as exc:
            return _loading(exc)
        if batch_text is not None:
            with contextlib.suppress(ValueError):
                return web.json_response(merged_slots(json.loads(text), json.loads(batch_text)))
        return web.Response(status=status, text=text, content_type="application/json")

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


def _chat(upstream: Upstream) -> Handler:
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
        target = request.get(UPSTREAM, upstream)
        return await _forward(target, request, "POST", request.path_qs, raw, sglang_shapes)

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
        target = request.get(UPSTREAM, upstream)
        try:
            answer = await target.client().post(
                target.base + "/completion", json=body, headers=target.headers
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


def _health_generate(upstream: Upstream) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        probe = {"prompt": "Hi", "n_predict": 1, "cache_prompt": False}
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


async def serve(host: str, port: int, command: list[str]) -> int:
    """Start llama-server, answer in front of it, and end with it (its exit code is ours)."""
    access_token = os.environ.get(ACCESS_TOKEN_ENV) or None
    token_header = os.environ.get(TOKEN_HEADER_ENV) or None
    api_key = os.environ.get(API_KEY_ENV) or None
    inside_key = os.environ.get(INSIDE_KEY_ENV) or None
    ours = (ACCESS_TOKEN_ENV, TOKEN_HEADER_ENV, API_KEY_ENV, INSIDE_KEY_ENV)
    env = {k: v for k, v in os.environ.items() if k not in ours}
    batch_nice = batch_niceness(os.environ)  # a bad setting stops the adapter before anything starts
    server, upstream = await start_llama_server(command, secrets.token_urlsafe(24), env, die_with_the_adapter)
    slots = slots_from_command(command)
    lanes = Lanes(slots, BatchServer(command, env, batch_nice)) if slots else None
    app = build_app(upstream, access_token, api_key, inside_key, lanes, token_header)
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
    sys.stderr.write(f"{LISTENING_LINE} {host}:{port}, llama-server on {upstream.base}\n")
    sys.stderr.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    waiting = asyncio.ensure_future(server.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    await runner.cleanup()
    if lanes is not None and lanes.batch_server is not None:
        await lanes.batch_server.stop()
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
    try:
        return asyncio.run(serve(args.host, args.port, command))
    except SandserveError as exc:
        sys.stderr.write(f"sandserve adapter: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
