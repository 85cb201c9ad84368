"""llama.cpp's llama-server: the CPU engine for machines with no GPU (facts/local-engine.md)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sandserve.engines.base import Capabilities, Launch, LogSignature, ReadinessProbe
from sandserve.engines.llamacpp_adapter import API_KEY_ENV, LISTENING_LINE
from sandserve.spec import ProviderName, ServeSpec

#: Per slot when a model file does not say how long a context it was trained for.
FALLBACK_CONTEXT = 8192
#: Per slot at most: room for the guide's 3,000-token passages and their answers, at a bounded KV memory.
MAX_SLOT_CONTEXT = 8192
#: Finished slots' prompts kept in RAM (MiB) for later requests that share their prefix: a 3,000-token passage
#: of SmolLM2-135M is about 70 MB of KV, so this holds the guide's passages for a second pass.
CACHE_RAM_MIB = 4096

_PHASES = (
    ("adapter up", LISTENING_LINE),
    ("loading weights", r"load_model: loading model"),
    ("kv cache allocated", r"load_model: initializing, n_slots"),
    ("weights loaded", r"llama_server: model loaded"),
    ("listening", r"llama_server: listening on"),
)

_SIGNATURES: tuple[LogSignature, ...] = (
    LogSignature.of(
        r"couldn't bind HTTP server socket|sandserve adapter: cannot listen",
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


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class MachineFit:
    """Engine flags sized to this machine: threads from the cores this process may use, slots for batches."""

    cores: int = field(default_factory=available_cores)

    @property
    def threads(self) -> int:
        """Generation threads: half the cores (on 2 cores, OpenMP spin-waiting with -t 2 made a 16-token reply
        take 0.3-2 s instead of 5 ms), at least one."""
        return max(1, self.cores // 2)

    @property
    def batch_threads(self) -> int:
        """Prompt processing (prefill) is compute-bound: every core."""
        return self.cores

    @property
    def slots(self) -> int:
        """Requests decoded together: batch work (classify, the batch runner) keeps them all busy."""
        return max(2, min(8, 2 * self.cores))


@lru_cache(maxsize=16)
def trained_context(model_path: str) -> int:
    """The context length the model was trained for, from its GGUF header (FALLBACK_CONTEXT if unreadable)."""
    try:
        import gguf

        reader = gguf.GGUFReader(model_path)
        arch_field = reader.fields["general.architecture"]
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        ctx_field = reader.fields[f"{arch}.context_length"]
        return int(ctx_field.parts[ctx_field.data[0]][0])
    except (OSError, KeyError, ValueError, IndexError, ImportError):
        return FALLBACK_CONTEXT


@dataclass(frozen=True)
class LlamaCppEngine:
    binary: str = "llama-server"
    fit: MachineFit = field(default_factory=MachineFit)

    name = "llamacpp"
    capabilities = Capabilities(
        reasoning_effort=False,
        regex=True,
        ebnf=True,
        native_generate=True,  # the adapter translates SGLang's /generate
        cache_report=True,
    )
    # A one-token completion: llama-server answers it whether or not the adapter is in front (in a sandbox it
    # is not, and llama-server has no /health_generate of its own).
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

    def slot_context(self, spec: ServeSpec) -> int:
        """Each slot's context: what was asked, else the model's trained context (bounded, for memory)."""
        if spec.context_length:
            return spec.context_length
        return min(trained_context(spec.model), MAX_SLOT_CONTEXT)

    def launch(self, spec: ServeSpec, *, host: str, port: int, api_key: str | None) -> Launch:
        """Locally, llama-server behind the adapter (llamacpp_adapter.py), which answers on ``host:port``.

        The prompt cache stays on (llama-server's default ``cache_prompt``) and finished slots are kept in a RAM
        cache (``--cache-ram``), so a second pass over the same passages finds them. The API key goes to the
        adapter through its environment, never on a command line."""
        slots = self.fit.slots
        server = [
            self.binary,
            "-m",
            spec.model,
            "--alias",
            spec.served_name,
            "-c",
            str(self.slot_context(spec) * slots),
            "-np",
            str(slots),
            "-t",
            str(self.fit.threads),
            "-tb",
            str(self.fit.batch_threads),
            "--cache-ram",
            str(CACHE_RAM_MIB),
            "--jinja",
            "--reasoning-format",
            "deepseek" if spec.reasoning_parser else "none",
            "--no-ui",
            "--offline",
            "--metrics",
            *spec.extra_args,
        ]
        env = dict(spec.env)
        secrets = frozenset({api_key} if api_key else ())
        if spec.provider is not ProviderName.LOCAL:
            # In a sandbox (the Daytona stand-in runs llama-server for tests) its proxy is the front.
            # llama-server reads its key from LLAMA_API_KEY: never on the command line, which any local user
            # can read in /proc/PID/cmdline (the environment is readable only by the same user).
            server += ["--host", host, "--port", str(port)]
            if api_key:
                env["LLAMA_API_KEY"] = api_key
            return Launch(argv=server, env=env, secrets=secrets)
        adapter = [
            sys.executable,
            "-m",
            "sandserve.engines.llamacpp_adapter",
            "--host",
            host,
            "--port",
            str(port),
        ]
        if api_key:
            env[API_KEY_ENV] = api_key
        return Launch(argv=[*adapter, "--", *server], env=env, secrets=secrets)

    def kv_pool_tokens(self, log_text: str) -> int | None:
        """Every slot's context together: llama-server splits its KV cache evenly between slots."""
        match = re.search(r"n_slots = (\d+), n_ctx_slot = (\d+)", log_text)
        return int(match.group(1)) * int(match.group(2)) if match else None
