"""A stand-in for SGLang's HTTP server (facts/sglang.md SHAPES), for machines with no GPU.

Two ways to run it:

* in-process: ``with SGLangStandin(reasoning_parser="gpt-oss") as server: ... server.url ...`` (a thread,
  a free 127.0.0.1 port);
* as SGLang itself: ``PYTHONPATH=tests/standins/fake_sglang python -m sglang.launch_server --model-path ...``
  prints SGLang's real start-up log lines (to stderr, as SGLang's logger does), then serves. Environment:
  ``SANDSERVE_FAKE_SGLANG_FAIL`` = kv_oom | cuda_oom | host_oom | context | gated | not_found prints that
  failure's real log and exits non-zero (kv_oom and cuda_oom the way SGLang does: "Scheduler hit an
  exception", "Received sigquit from a child process", then the parent SIGKILLs its own tree);
  ``SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS`` (default 0.5) is how long /health* answer 503 after the port
  opens; ``SANDSERVE_FAKE_SGLANG_READY_FILE`` holds warm-up until that file exists;
  ``SANDSERVE_FAKE_SGLANG_LOG_STEP`` (default 0.02) is the pause between log lines;
  ``SANDSERVE_FAKE_SGLANG_KV_TOKENS`` the KV pool size it reports;
  ``SANDSERVE_FAKE_SGLANG_DECODE_SECONDS`` (default 0) how long each generation takes once running. At most
  ``--max-running-requests`` generate at once; the rest wait (``/v1/loads`` counts them as waiting).

The "model" is deterministic word salad seeded by the prompt. A token is a whitespace-led chunk of text
(``\\s*\\S+``). Constrained decoding really holds for what the generators below cover: regexes the
stdlib parses, minus lookarounds and backreferences (as xgrammar); EBNF with literals, character classes,
rule references, groups, ``| * + ? {m,n}``; JSON schemas via a minimal instance of type/properties/items/
enum/const/anyOf/oneOf/allOf/$ref/min-max bounds/pattern/format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from .sglang_agents import add_agent_routes
from .sglang_boot_model import BootModel
from .sglang_chat import chat_route
from .sglang_native import generate_route, in_flight_middleware, metrics_route, v1_loads_route
from .sglang_priority import PRIORITY_POLICIES
from .sglang_protocol import load_models, protocol_dir
from .sglang_state import (
    DECODE_SECONDS_ENV,
    FAIL_ENV,
    FAILURES,
    LOG_STEP_ENV,
    READY_FILE_ENV,
    REASONING_PARSERS,
    TOOL_CALL_PARSERS,
    VERSION,
    WARMUP_ENV,
    Handler,
    ServerConfig,
    ServerState,
    parse_args,
)

# What tests import from here, wherever it lives now.
__all__ = [
    "FAIL_ENV",
    "READY_FILE_ENV",
    "REASONING_PARSERS",
    "TOOL_CALL_PARSERS",
    "SGLangStandin",
    "main",
]


def build_app(state: ServerState) -> web.Application:
    in_flight: dict[int, int] = {}  # request -> its prompt tokens, while it is being generated (/v1/loads)
    app = web.Application(
        middlewares=[
            _access_log_middleware(state),
            _auth_middleware(state),
            in_flight_middleware(state, in_flight),
        ]
    )
    routes = [
        web.get("/health", _health(state)),
        web.get("/health_generate", _health(state)),
        web.get("/v1/models", _models(state)),
        web.get("/server_info", _server_info(state)),
        web.get("/get_server_info", _server_info(state)),
        web.get("/model_info", _model_info(state)),
        web.get("/get_model_info", _model_info(state)),
        web.get("/flush_cache", _flush_cache(state)),
        web.post("/flush_cache", _flush_cache(state)),
        web.post("/generate", generate_route(state)),
        web.post("/v1/chat/completions", chat_route(state)),
        web.get("/metrics", metrics_route(state)),
        web.get("/v1/loads", v1_loads_route(state, in_flight)),
    ]
    app.add_routes(routes)
    add_agent_routes(app, state)
    return app


def _auth_middleware(state: ServerState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = state.config.api_key
        open_path = request.path.startswith(("/health", "/ready", "/metrics"))
        if key and request.method != "OPTIONS" and not open_path:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            bearer_ok = scheme.lower() == "bearer" and token == key
            if not bearer_ok:  # SGLang's utils/auth.py reads Authorization: Bearer only, never x-api-key
                return web.json_response({"error": "Unauthorized"}, status=401)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return web.json_response({"detail": "Not Found"}, status=404)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"detail": "Method Not Allowed"}, status=405)

    return middleware


def _access_log_middleware(state: ServerState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if state.access_log and not request.path.startswith("/health"):
            peer = request.transport.get_extra_info("peername") if request.transport else None
            who = f"{peer[0]}:{peer[1]}" if peer else "127.0.0.1:0"
            line = f'"{request.method} {request.path_qs} HTTP/1.1" {response.status} {response.reason}'
            log(f"INFO:     {who} - {line}")
        return response

    return middleware


def _health(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200 if state.ready else 503)

    return handler


def _models(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        card = {
            "id": state.config.name,
            "object": "model",
            "created": int(state.started),
            "owned_by": "sglang",
            "root": state.config.model_path,
            "parent": None,
            "max_model_len": state.config.context_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    return handler


def server_args(config: ServerConfig) -> dict[str, Any]:
    return {
        "model_path": config.model_path,
        "tokenizer_path": config.model_path,
        "host": config.host,
        "port": config.port,
        "api_key": config.api_key,
        "served_model_name": config.name,
        "reasoning_parser": config.reasoning_parser,
        "tool_call_parser": config.tool_call_parser,
        "enable_cache_report": config.enable_cache_report,
        "enable_metrics": config.enable_metrics,
        "context_length": config.context_length,
        "mem_fraction_static": config.mem_fraction_static or 0.85,
        "cuda_graph_max_bs": config.cuda_graph_max_bs or 256,
        "max_running_requests": config.running_requests,
        "chunked_prefill_size": config.chunked_prefill_size or 8192,
        "schedule_policy": config.schedule_policy,
        "enable_priority_scheduling": config.enable_priority_scheduling,
        "default_priority_value": config.default_priority_value,
        "schedule_low_priority_values_first": config.schedule_low_priority_values_first,
        "tp_size": 1,
        "dp_size": 1,
        "trust_remote_code": False,
    }


def _server_info(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        config = state.config
        internal = {
            "max_total_num_tokens": config.max_total_num_tokens,
            "max_running_requests": config.running_requests,
            "context_len": config.context_len,
            "last_gen_throughput": 0.0,
        }
        info = {
            **server_args(config),
            "max_total_num_tokens": config.max_total_num_tokens,
            "max_req_input_len": config.context_len - 5,
            "internal_states": [internal],
            "version": VERSION,
        }
        return web.json_response(info)

    return handler


def _model_info(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        arch, model_type, _ = architecture(state.config.model_path)
        return web.json_response(
            {
                "model_path": state.config.model_path,
                "tokenizer_path": state.config.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "has_image_understanding": False,
                "has_audio_understanding": False,
                "model_type": model_type,
                "architectures": [arch],
            }
        )

    return handler


def _flush_cache(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        state.cache.flush()
        return web.Response(
            text="Cache flushed.\nPlease check backend logs for more details. (When there are running or "
            "waiting requests, the operation will not be performed.)\n"
        )

    return handler


# --- running it ---------------------------------------------------------------------------------------------


class _Runner:
    """The aiohttp site plus its warm-up, on whatever loop calls ``serve``."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.port: int | None = None
        self.stop_requested: asyncio.Event | None = None

    async def serve(self, started: Callable[[int], None], warm_up: Callable[[], Awaitable[None]]) -> None:
        self.stop_requested = asyncio.Event()
        sock = socket.socket(socket.AF_INET6 if ":" in self.state.config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.state.config.host, self.state.config.port))
        runner = web.AppRunner(build_app(self.state), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self.port = sock.getsockname()[1]
        started(self.port)
        warm = asyncio.ensure_future(warm_up())
        try:
            await self.stop_requested.wait()
        finally:
            warm.cancel()
            await runner.cleanup()


class SGLangStandin:
    """The stand-in in a background thread on a free 127.0.0.1 port.

    ``warmup_seconds``: how long /health and /health_generate answer 503; ``hold_warmup``: answer 503
    until ``finish_warmup()``; ``decode_seconds``: how long each generation runs. Other keyword arguments are
    ``ServerConfig`` fields (the launch flags).
    """

    def __init__(
        self,
        *,
        warmup_seconds: float = 0.0,
        hold_warmup: bool = False,
        decode_seconds: float = 0.0,
        **flags: Any,
    ) -> None:
        config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **flags})
        self.state = ServerState(config, decode_seconds=decode_seconds)
        self._runner = _Runner(self.state)
        self._warmup_seconds = warmup_seconds
        self._release = threading.Event()
        if not hold_warmup:
            self._release.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def config(self) -> ServerConfig:
        return self.state.config

    @property
    def url(self) -> str:
        if self._runner.port is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self._runner.port}"

    def start(self) -> SGLangStandin:
        load_models()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sglang-standin", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        if self._error is not None or self._runner.port is None:
            raise RuntimeError(f"the SGLang stand-in did not start: {self._error}")
        return self

    def finish_warmup(self) -> None:
        self._release.set()

    def stop(self) -> None:
        if self._loop is not None and self._runner.stop_requested is not None:
            self._loop.call_soon_threadsafe(self._runner.stop_requested.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> SGLangStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            serving = self._runner.serve(lambda _port: self._started.set(), self._warm_up)
            self._loop.run_until_complete(serving)
        except BaseException as e:
            self._error = e
            self._started.set()
        finally:
            self._loop.close()

    async def _warm_up(self) -> None:
        await asyncio.sleep(self._warmup_seconds)
        while not self._release.is_set():
            await asyncio.sleep(0.02)
        self.state.ready = True


# --- the process: SGLang's start-up log, its failures, then serving -----------------------------------------

_ARCHITECTURES = (
    ("gpt-oss", "GptOssForCausalLM", "gpt_oss"),
    ("qwen3-coder", "Qwen3MoeForCausalLM", "qwen3_moe"),
    ("a3b", "Qwen3MoeForCausalLM", "qwen3_moe"),
    ("qwen3", "Qwen3ForCausalLM", "qwen3"),
    ("distill-qwen", "Qwen2ForCausalLM", "qwen2"),
    ("mistral", "MistralForCausalLM", "mistral"),
    ("magistral", "MistralForCausalLM", "mistral"),
)


def architecture(model_path: str) -> tuple[str, str, str]:
    """(architecture, model_type, weight details as "Load weight end" prints them)."""
    lowered = model_path.lower()
    for needle, arch, model_type in _ARCHITECTURES:
        if needle in lowered:
            return arch, model_type, "quant=mxfp4, " if model_type == "gpt_oss" else ""
    return "LlamaForCausalLM", "llama", ""


def log(message: str) -> None:
    """One line as SGLang's logger writes it: ``[%Y-%m-%d %H:%M:%S] message`` on stderr."""
    raw(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}\n")


def raw(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


_SITE = "/sgl-workspace/sglang/python/sglang"
_MAIN_FRAMES = (
    '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    '  File "<frozen runpy>", line 88, in _run_code\n'
    f'  File "{_SITE}/launch_server.py", line 32, in <module>\n'
    "    run_server(server_args)\n"
)


def _hub_traceback(model: str, kind: str) -> str:
    url = f"https://huggingface.co/{model}/resolve/main/config.json"
    request_id = "Root=1-6740f3a1-3c1b2d4e5f60718293a4b5c6;0e6f4c1a-6b4f-4e53-9d1e-2f1a0b7c8d9e"
    if kind == "gated":
        hub_error = (
            "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: " + request_id + ")\n\n"
            f"Cannot access gated repo for url {url}.\n"
            f"Access to model {model} is restricted. You must have access to it and be authenticated to "
            "access it. Please log in.\n"
        )
        final = (
            "OSError: You are trying to access a gated repo.\n"
            f"Make sure to have access to it at https://huggingface.co/{model}.\n"
            + hub_error.split(": ", 1)[1]
        )
    else:
        hub_error = (
            "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: "
            + request_id
            + ")\n\n"
            f"Repository Not Found for url: {url}.\n"
            "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
            "If you are trying to access a private or gated repo, make sure you are authenticated. For more "
            "details, see https://huggingface.co/docs/huggingface_hub/authentication\n"
            "Invalid username or password.\n"
        )
        final = (
            f"OSError: {model} is not a local folder and is not a valid model identifier listed on "
            "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a token "
            "having permission to this repo either by logging in with `hf auth login` or by passing "
            "`token=<your_token>`\n"
        )
    return (
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.12/dist-packages/huggingface_hub/utils/_http.py", line 402, in '
        "hf_raise_for_status\n    response.raise_for_status()\n"
        f"httpx.HTTPStatusError: Client error '401 Unauthorized' for url '{url}'\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.12/dist-packages/transformers/utils/hub.py", line 479, in '
        "cached_files\n"
        "    hf_hub_download(\n"
        f"{hub_error}\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        + _MAIN_FRAMES
        + f'  File "{_SITE}/srt/server_args.py", line 5128, in get_model_config\n'
        "    self.model_config = ModelConfig.from_server_args(self)\n"
        '  File "/usr/local/lib/python3.12/dist-packages/transformers/utils/hub.py", line 543, in '
        "cached_files\n"
        "    raise OSError(\n" + final
    )


def _context_traceback(requested: int, derived: int) -> str:
    return (
        "Traceback (most recent call last):\n"
        + _MAIN_FRAMES
        + f'  File "{_SITE}/srt/configs/model_config.py", line 421, in _derive_context_length\n'
        "    raise ValueError(\n"
        f"ValueError: Warning: User-specified context_length ({requested}) is greater than the derived "
        f"context_length ({derived}). This may lead to incorrect model outputs or CUDA errors. Note that the "
        "derived context_length may differ from max_position_embeddings in the model's config. To allow "
        "overriding this maximum, set the env var SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1\n"
    )


def _scheduler_exception(frames: str, error: str) -> None:
    """A scheduler child's failure: its traceback, then the parent's SIGQUIT handler kills the whole tree."""
    log(
        "Scheduler hit an exception: Traceback (most recent call last):\n"
        f'  File "{_SITE}/srt/managers/scheduler.py", line 3571, in run_scheduler_process\n'
        "    scheduler = Scheduler(\n" + frames + error + "\n"
    )
    log("Received sigquit from a child process. It usually means the child failed.")
    os.kill(os.getpid(), signal.SIGKILL)  # kill_process_tree(os.getpid()) ends with the parent itself


def _priority_policy_traceback(policy: str) -> str:
    """ServerArgs' check of the scheduling policy under priority scheduling (server_args.py)."""
    return (
        "Traceback (most recent call last):\n"
        + _MAIN_FRAMES
        + f'  File "{_SITE}/srt/server_args.py", line 7328, in check_server_args\n'
        "    assert self.schedule_policy in [\n"
        "AssertionError: To use priority scheduling, schedule_policy must be 'fcfs' or 'lof'. "
        f"'{policy}' is not supported.\n"
    )


class Boot:
    """What ``python3 -m sglang.launch_server`` prints, step by step, and the failure a test asked for."""

    def __init__(self, config: ServerConfig, fail: str | None, step: float) -> None:
        self.config = config
        self.fail = fail
        self.step = step
        self.boot = BootModel.from_environment(config.model_path)

    def line(self, message: str) -> None:
        log(message)
        time.sleep(self.step)

    def run(self) -> int:
        config = self.config
        allow_longer = os.environ.get("SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN") in ("1", "true", "True")
        if self.fail in ("gated", "not_found"):
            raw(_hub_traceback(config.model_path, self.fail))
            return 1
        if self.fail == "context" or (config.context_len > config.model_context_len and not allow_longer):
            requested = max(config.context_len, 2 * config.model_context_len)
            raw(_context_traceback(requested, config.model_context_len))
            return 1
        if config.enable_priority_scheduling and config.schedule_policy not in PRIORITY_POLICIES:
            raw(_priority_policy_traceback(config.schedule_policy))
            return 1
        self.boot.wait("start")
        args = ", ".join(f"{key}={value!r}" for key, value in server_args(config).items())
        self.line(f"server_args=ServerArgs({args})")
        self.line("Using default HuggingFace chat template with detected content format: string")
        self.line("Init torch distributed begin.")
        self.line("Init torch distributed ends. elapsed=0.21 s, mem usage=0.10 GB")
        self.line("Load weight begin. avail mem=78.41 GB")
        self.boot.fetch_weights(self.line)
        self.line("Using model weights format ['*.safetensors']")
        self.shards(done=1 if self.fail == "host_oom" else 3)
        if self.fail == "host_oom":
            raw(
                "Traceback (most recent call last):\n"
                + _MAIN_FRAMES
                + f'  File "{_SITE}/srt/entrypoints/engine.py", line 1277, in _wait_for_scheduler_ready\n'
                "    raise _scheduler_died_error(i, scheduler_procs[i])\n"
                "RuntimeError: Rank 0 scheduler died during initialization (exit code: -9). If exit code is "
                "-9 (SIGKILL), a common cause is the OS OOM killer. Run `dmesg -T | grep -i oom` to check.\n"
            )
            return 1
        arch, _, details = architecture(config.model_path)
        self.boot.wait("load")
        self.line(
            f"Load weight end. elapsed=41.20 s, type={arch}, {details}avail mem=64.12 GB, mem usage=14.29 GB."
        )
        if self.fail == "kv_oom":
            fraction = config.mem_fraction_static or 0.85
            _scheduler_exception(
                f'  File "{_SITE}/srt/model_executor/model_runner.py", line 612, in initialize\n'
                "    self.init_memory_pool(min_per_gpu_memory)\n"
                f'  File "{_SITE}/srt/model_executor/pool_configurator.py", line 86, in __post_init__\n'
                "    raise RuntimeError(msg)\n",
                "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. "
                f"Current value: mem_fraction_static={fraction}",
            )
        self.kv_pool()
        self.boot.compile_kernels(self.line)
        self.boot.capture_graphs()
        self.cuda_graphs()
        self.line(
            f"max_total_num_tokens={config.max_total_num_tokens}, chunked_prefill_size="
            f"{config.chunked_prefill_size or 8192}, max_prefill_tokens=16384, max_running_requests="
            f"{config.running_requests}, context_len={config.context_len}, available_gpu_mem=8.71 GB"
        )
        return self.serve()

    def shards(self, done: int) -> None:
        for n in range(done + 1):
            timing = "00:00<?, ?it/s" if n == 0 else f"00:{12 * n:02d}<00:{12 * (3 - n):02d}, 12.10s/it"
            raw(f"Loading safetensors checkpoint shards: {100 * n // 3:3d}% Completed | {n}/3 [{timing}]\n")
            time.sleep(self.step)

    def kv_pool(self) -> None:
        total = self.config.max_total_num_tokens
        self.line("Using KV cache dtype: torch.bfloat16")
        if architecture(self.config.model_path)[1] == "gpt_oss":
            swa = total * 4 // 5
            self.line(f"Use sliding window memory pool. full_layer_tokens={total}, swa_layer_tokens={swa}")
            self.line(f"KV Cache is allocated. #tokens: {swa}, K size: 11.18 GB, V size: 11.18 GB")
        self.line(f"KV Cache is allocated. #tokens: {total}, K size: 13.97 GB, V size: 13.97 GB")
        self.line("Memory pool end. avail mem=9.87 GB")

    def cuda_graphs(self) -> None:
        max_bs = self.config.cuda_graph_max_bs or 256
        ladder = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256)
        sizes = [bs for bs in ladder if bs <= max_bs]
        self.line("Capture cuda graph begin. This can take up to several minutes. avail mem=9.31 GB")
        self.line(f"Capture cuda graph bs {sizes}")
        if self.fail == "cuda_oom":
            _scheduler_exception(
                f'  File "{_SITE}/srt/model_executor/cuda_graph_runner.py", line 412, in __init__\n'
                "    raise Exception(\n",
                "Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                "has a total capacity of 79.19 GiB of which 1.05 GiB is free. Including non-PyTorch memory, "
                "this process has 78.13 GiB memory in use. Of the allocated memory 75.31 GiB is allocated by "
                "PyTorch, and 1.12 GiB is reserved by PyTorch but unallocated. If reserved but unallocated "
                "memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
                "fragmentation.  See documentation for Memory Management  "
                "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)\n"
                "Possible solutions:\n"
                "1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)\n"
                "2. set --cuda-graph-max-bs to a smaller value (e.g., 16)\n"
                "3. disable torch compile by not using --enable-torch-compile\n"
                "4. disable CUDA graph by --disable-cuda-graph. (Not recommended. Huge performance loss)\n"
                "Open an issue on GitHub https://github.com/sgl-project/sglang/issues/new/choose \n",
            )
        raw(
            f"Capturing batches (bs=1 avail_mem=8.71 GB): 100%|██████████| {len(sizes)}/{len(sizes)} "
            "[00:09<00:00,  3.88it/s]\n"
        )
        self.line("Capture cuda graph end. Time elapsed: 9.41 s. mem usage=0.60 GB. avail mem=8.71 GB.")

    def serve(self) -> int:
        state = ServerState(
            self.config, access_log=True, decode_seconds=float(os.environ.get(DECODE_SECONDS_ENV, "0"))
        )
        runner = _Runner(state)
        ready_file = os.environ.get(READY_FILE_ENV)
        warmup = float(os.environ.get(WARMUP_ENV, "0.5"))

        def started(port: int) -> None:
            log(f"INFO:     Started server process [{os.getpid()}]")
            log("INFO:     Waiting for application startup.")
            log("INFO:     Application startup complete.")
            log(f"INFO:     Uvicorn running on http://{self.config.host}:{port} (Press CTRL+C to quit)")

        async def warm_up() -> None:
            await asyncio.sleep(warmup)
            while ready_file and not Path(ready_file).exists():
                await asyncio.sleep(0.05)
            log('INFO:     127.0.0.1:40512 - "GET /model_info HTTP/1.1" 200 OK')
            log(
                "Prefill batch, #new-seq: 1, #new-token: 7, #cached-token: 0, token usage: 0.00, "
                "#running-req: 0, #queue-req: 0, "
            )
            log('INFO:     127.0.0.1:40516 - "POST /generate HTTP/1.1" 200 OK')
            state.ready = True
            log("The server is fired up and ready to roll!")

        async def serve_until_signal() -> None:
            loop = asyncio.get_running_loop()
            serving = asyncio.ensure_future(runner.serve(started, warm_up))
            while runner.stop_requested is None:
                await asyncio.sleep(0.01)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, runner.stop_requested.set)
            await serving

        try:
            asyncio.run(serve_until_signal())
        except OSError as e:  # the port is taken, as uvicorn reports it
            log(
                f"ERROR:    [Errno {e.errno}] error while attempting to bind on address "
                f"('{self.config.host}', {self.config.port}): {e.strerror}"
            )
            return 1
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    # Inside a Daytona stand-in sandbox with remapped ports, "port 8000" is a distinct local port per sandbox.
    remapped = os.environ.get(f"DAYTONA_STANDIN_PORT_{config.port}")
    if remapped:
        config = dataclasses.replace(config, port=int(remapped))
    fail = os.environ.get(FAIL_ENV) or None
    if fail is not None and fail not in FAILURES:
        raw(f"{FAIL_ENV}={fail!r}: use one of {', '.join(FAILURES)}\n")
        return 2
    try:
        protocol_dir()  # fetched here at worst, before the port opens; loaded on the first request
        return Boot(config, fail, float(os.environ.get(LOG_STEP_ENV, "0.02"))).run()
    except KeyboardInterrupt:
        return 130
    except Exception:
        raw(traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main())
