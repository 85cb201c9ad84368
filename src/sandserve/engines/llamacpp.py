"""llama.cpp's llama-server: the CPU engine for machines with no GPU (facts/local-engine.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sandserve.engines.base import Capabilities, Launch, LogSignature, ReadinessProbe
from sandserve.spec import ServeSpec

#: Shared by the slots (16k tokens each): room for the guide's 12,000-character passages at a few MB of KV.
DEFAULT_CONTEXT = 32768

_PHASES = (
    ("loading weights", r"load_model: loading model"),
    ("kv cache allocated", r"load_model: initializing, n_slots"),
    ("weights loaded", r"llama_server: model loaded"),
    ("listening", r"llama_server: listening on"),
)

_SIGNATURES: tuple[LogSignature, ...] = (
    LogSignature.of(
        r"couldn't bind HTTP server socket",
        "the port is already taken by another process",
        "Pick another --port (or leave it out: a free one is chosen), or stop what listens there.",
    ),
    LogSignature.of(
        r"error loading model|failed to load model|gguf_init_from_file.*failed|invalid magic",
        "the model file could not be loaded (corrupt, truncated, or not a GGUF llama.cpp understands)",
        "Check the file (re-download or re-convert it to GGUF), or leave --model out to serve the tiny model.",
    ),
    LogSignature.of(
        r"failed to allocate|std::bad_alloc|Cannot allocate memory",
        "the machine ran out of memory while loading the model",
        "Use a smaller model or quantisation, or a smaller --context-length.",
    ),
    LogSignature.of(
        r"illegal instruction|Illegal instruction",
        "this CPU lacks an instruction the engine was built for (AVX2/FMA/F16C)",
        "Run on a CPU with AVX2, or set SANDSERVE_LLAMA_SERVER to a llama-server built for this machine.",
    ),
)


@dataclass(frozen=True)
class LlamaCppEngine:
    binary: str = "llama-server"
    threads: int = 1
    """One thread: on 2 cores, OpenMP spin-waiting with -t 2 made a 16-token reply take 0.3-2 s, not 5 ms."""
    parallel_slots: int = 2

    name = "llamacpp"
    capabilities = Capabilities(
        reasoning_effort=False,
        regex=True,
        ebnf=True,
        native_generate=False,
        cache_report=True,
    )
    readiness = ReadinessProbe(
        "POST", "/v1/completions", {"prompt": "Ready?", "max_tokens": 1, "temperature": 0}
    )
    phase_patterns = tuple((name, re.compile(pattern)) for name, pattern in _PHASES)
    signatures = _SIGNATURES
    info_path = "/props"

    def summarise_info(self, data: dict[str, Any]) -> dict[str, Any]:
        settings = data.get("default_generation_settings") or {}
        return {
            "max_running_requests": data.get("total_slots"),
            "context_len": settings.get("n_ctx"),
            "version": data.get("build_info"),
        }

    def launch(self, spec: ServeSpec, *, host: str, port: int, api_key: str | None) -> Launch:
        argv = [
            self.binary,
            "-m",
            spec.model,
            "--alias",
            spec.served_name,
            "--host",
            host,
            "--port",
            str(port),
            "-c",
            str(spec.context_length or DEFAULT_CONTEXT),
            "-np",
            str(self.parallel_slots),
            "-t",
            str(self.threads),
            "--jinja",
            "--reasoning-format",
            "deepseek" if spec.reasoning_parser else "none",
            "--no-ui",
            "--offline",
            "--metrics",
        ]
        env = dict(spec.env)
        if api_key:
            # llama-server reads its key from LLAMA_API_KEY: never on the command line, which any local user
            # can read in /proc/PID/cmdline (the environment is readable only by the same user).
            env["LLAMA_API_KEY"] = api_key
        argv += list(spec.extra_args)
        return Launch(argv=argv, env=env, secrets=frozenset({api_key} if api_key else ()))

    def kv_pool_tokens(self, log_text: str) -> int | None:
        """Every slot's context together: llama-server splits its KV cache evenly between slots."""
        match = re.search(r"n_slots = (\d+), n_ctx_slot = (\d+)", log_text)
        return int(match.group(1)) * int(match.group(2)) if match else None
