"""The SGLang stand-in's launch flags, constants and server state, and the HTTP helpers its routes share."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandserve.engines.sglang import SGLANG_VERSION

from .sglang_priority import SCHEDULE_POLICIES, PriorityScheduler
from .sglang_text import PrefixCache, tokenize

VERSION = SGLANG_VERSION
FAIL_ENV = "SANDSERVE_FAKE_SGLANG_FAIL"
WARMUP_ENV = "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS"
READY_FILE_ENV = "SANDSERVE_FAKE_SGLANG_READY_FILE"
LOG_STEP_ENV = "SANDSERVE_FAKE_SGLANG_LOG_STEP"
KV_TOKENS_ENV = "SANDSERVE_FAKE_SGLANG_KV_TOKENS"
DECODE_SECONDS_ENV = "SANDSERVE_FAKE_SGLANG_DECODE_SECONDS"
FAILURES = ("kv_oom", "cuda_oom", "host_oom", "context", "gated", "not_found")

TOOL_CALL_PARSERS = (
    "deepseekv3",
    "deepseekv31",
    "deepseekv32",
    "deepseekv4",
    "glm",
    "glm45",
    "glm47",
    "gpt-oss",
    "kimi_k2",
    "lfm2",
    "llama3",
    "mimo",
    "mistral",
    "poolside_v1",
    "pythonic",
    "qwen",
    "qwen25",
    "qwen3_coder",
    "step3",
    "step3p5",
    "minimax-m2",
    "trinity",
    "interns1",
    "hermes",
    "hunyuan",
    "gigachat3",
    "gemma4",
    "auto",
)
REASONING_PARSERS = (
    "deepseek-r1",
    "deepseek-v3",
    "deepseek-v4",
    "glm45",
    "hunyuan",
    "gpt-oss",
    "kimi",
    "kimi_k2",
    "mimo",
    "poolside_v1",
    "qwen3",
    "qwen3-thinking",
    "minimax",
    "minimax-append-think",
    "step3",
    "step3p5",
    "mistral",
    "nemotron_3",
    "interns1",
    "gemma4",
    "auto",
)
EOS_ID = 200002
REASONING_WORDS = {"none": 4, "minimal": 4, "low": 12, "medium": 32, "high": 96, "max": 96}  # "max": as high
ANSWER_WORDS = 20


# --- configuration: the launch flags SGLang takes ----------------------------------------------------


@dataclass
class ServerConfig:
    model_path: str = "openai/gpt-oss-20b"
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    api_key: str | None = None
    enable_cache_report: bool = False
    enable_metrics: bool = False
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    context_length: int | None = None
    mem_fraction_static: float | None = None
    cuda_graph_max_bs: int | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    schedule_policy: str = "fcfs"
    enable_priority_scheduling: bool = False
    default_priority_value: int | None = None
    schedule_low_priority_values_first: bool = False
    max_total_num_tokens: int = 1_220_512
    """What the GPU would give the KV pool (not a flag)."""
    model_context_len: int = 131_072
    """The model's own context length (not a flag)."""

    @property
    def name(self) -> str:
        return self.served_model_name or self.model_path

    @property
    def context_len(self) -> int:
        return self.context_length or self.model_context_len

    @property
    def running_requests(self) -> int:
        return self.max_running_requests or 2048


def parse_args(argv: Sequence[str]) -> ServerConfig:
    """SGLang's flags that matter here; every other flag is accepted and ignored."""
    parser = argparse.ArgumentParser(prog="python3 -m sglang.launch_server")
    parser.add_argument("--model-path", "--model", dest="model_path", required=True)
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--api-key")
    parser.add_argument("--enable-cache-report", action="store_true")
    parser.add_argument("--enable-metrics", action="store_true")
    parser.add_argument("--reasoning-parser", choices=REASONING_PARSERS)
    parser.add_argument("--tool-call-parser", choices=TOOL_CALL_PARSERS)
    parser.add_argument("--context-length", type=int)
    parser.add_argument("--mem-fraction-static", type=float)
    parser.add_argument("--cuda-graph-max-bs", type=int)
    parser.add_argument("--max-running-requests", type=int)
    parser.add_argument("--chunked-prefill-size", type=int)
    parser.add_argument("--schedule-policy", default="fcfs", choices=SCHEDULE_POLICIES)
    parser.add_argument("--enable-priority-scheduling", action="store_true")
    parser.add_argument("--default-priority-value", type=int)
    parser.add_argument("--schedule-low-priority-values-first", action="store_true")
    args, _unknown = parser.parse_known_args(list(argv))
    config = ServerConfig(**vars(args))
    if KV_TOKENS_ENV in os.environ:
        config.max_total_num_tokens = int(os.environ[KV_TOKENS_ENV])
    return config


@dataclass
class Metrics:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0

    def record(self, prompt: int, generated: int, cached: int) -> None:
        self.prompt_tokens += prompt
        self.generation_tokens += generated
        self.cached_tokens += cached
        self.requests += 1


@dataclass
class ServerState:
    config: ServerConfig
    cache: PrefixCache = field(default_factory=PrefixCache)
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = False
    access_log: bool = False
    started: float = field(default_factory=time.time)
    decode_seconds: float = 0.0
    """How long each generation takes once it runs (the stand-in answers at once otherwise)."""
    scheduler: PriorityScheduler = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = PriorityScheduler(self.config)


@dataclass
class Reply:
    """One chat answer, before it is shaped into a response or a stream."""

    reasoning: str | None
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    matched_stop: int | str | None

    @property
    def reasoning_tokens(self) -> int:
        return len(tokenize(self.reasoning or ""))

    @property
    def completion_tokens(self) -> int:
        calls = "".join(call["function"]["arguments"] for call in self.tool_calls or [])
        return self.reasoning_tokens + len(tokenize((self.content or "") + calls))


class BadRequest(Exception):
    """A 400 from the OpenAI routes; ``kind``: "BadRequestError" (serving checks), "Bad Request" (schema)."""

    def __init__(self, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.kind = kind


def error_response(message: str, kind: str = "BadRequestError", status: int = 400) -> web.Response:
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"JSON decode error: {e}", "Bad Request") from e


def sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def start_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response
