"""SGLang (``python3 -m sglang.launch_server``): the GPU engine (facts/sglang.md).

The log texts matched below are read from SGLang's source (0.5.x: ``model_runner.py``, ``weight_utils.py``,
``memory_pool.py``, ``pool_configurator.py``, ``scheduler.py``, ``engine.py``, ``configs/model_config.py``)
and, for the Hub failures, from huggingface_hub's and transformers' error messages.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sandserve.engines.base import (
    NATIVE_GENERATE_ROUTE,
    Engine,
    GenerateCall,
    Launch,
    LogSignature,
    ReadinessProbe,
)
from sandserve.engines.load_formats import LoadFields, parse_v1_loads
from sandserve.engines.priority import sglang_flags as sglang_priority_flags
from sandserve.errors import ConfigError
from sandserve.results import Capabilities, Constraint, ServerInfo
from sandserve.spec import GpuVendor, ServeSpec

#: The SGLang release sandserve speaks to: its images' tag, and the wheel whose own protocol models the tests'
#: SGLang stand-in checks every request and answer against, so the two never drift apart.
SGLANG_VERSION = "0.5.12.post1"
#: SGLang's own images of that release (facts/sglang.md), per GPU vendor.
#: The AMD image is built for gfx950 (MI350X/MI355X, the AMD GPU on offer); MI300X would take -rocm720-mi30x.
SGLANG_IMAGES = {
    GpuVendor.NVIDIA: f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130",
    GpuVendor.AMD: f"lmsysorg/sglang:v{SGLANG_VERSION}-rocm720-mi35x",
}

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

_PHASES = (
    # The first line of launch_server once its imports are done (python, torch, SGLang: many seconds).
    ("process started", r"server_args=ServerArgs\("),
    # The weights are fetched inside the load step, after "Load weight begin": the first line that proves
    # they are on disk is the shard-loading progress bar (or the cache hit); loaded implies downloaded.
    (
        "weights downloaded",
        r"Found local HF snapshot for .*; skipping download|"
        r"(?:Loading (?:safetensors|pt) checkpoint shards|Multi-thread loading shards): +\d+% Completed|"
        r"Load weight end\.",
    ),
    ("weights loaded", r"Load weight end\."),
    ("kv cache allocated", r"KV Cache is allocated\."),
    # FlashInfer's autotune (model_runner._flashinfer_autotune): slow when its cache is empty.
    ("kernels compiled", r"FlashInfer autotune completed\."),
    ("cuda graphs captured", r"Capture cuda graph end\."),
    ("server ready", r"The server is fired up and ready to roll!"),
)

_SIGNATURES: tuple[LogSignature, ...] = (
    LogSignature.of(
        # torch's own words: a CUDA build finding no NVIDIA driver; a ROCm build finding no AMD GPU.
        r"Found no NVIDIA driver on your system|No HIP GPUs are available",
        "the image's engine build does not match the sandbox's GPU vendor (a CUDA image on an AMD GPU, or a "
        "ROCm image on an NVIDIA one)",
        "Leave --image out (sandserve picks SGLang's CUDA or ROCm image for the GPU), or give an image built "
        "for that vendor.",
    ),
    LogSignature.of(
        r"CUDA error: invalid device ordinal|HIP error: invalid device ordinal",
        "the engine was told to use more GPUs than the sandbox has (--tp-size / --dp-size above its count)",
        "Ask for as many GPUs as the engine splits over: `--gpus N` sets both (drop a -- --tp-size flag).",
    ),
    LogSignature.of(
        r"Not enough memory\. Please try to increase --mem-fraction-static",
        "the GPU had no memory left for the KV cache pool after loading the weights",
        "Give the KV pool room: `sandserve up ... -- --mem-fraction-static 0.95` (engine flags go after --), "
        "or lower --context-length or `-- --cuda-graph-max-bs 16`; or use a GPU with more memory "
        "(--gpu H200).",
    ),
    LogSignature.of(
        # 0.5.11+: "Rank 0 scheduler died during initialization (exit code: -9)"; before: "... scheduler is
        # dead." followed by "Exit code: -9". -9 is SIGKILL, which the kernel's OOM killer sends.
        r"scheduler died during initialization \(exit code: -9\)|scheduler is dead\..*\n.*Exit code: -9",
        "the sandbox ran out of host RAM and the OS OOM killer killed the scheduler (exit code -9)",
        "Use a GPU type whose sandbox has more host memory, or serve a smaller model.",
    ),
    LogSignature.of(
        r"CUDA out of memory|torch\.OutOfMemoryError|CUDA error: out of memory",
        "the GPU ran out of memory (CUDA out of memory)",
        "Lower the engine's memory use: `sandserve up ... -- --mem-fraction-static 0.8` (engine flags go "
        "after --), or `-- --cuda-graph-max-bs 16` or `-- --max-running-requests 32`; or use a GPU with more "
        "memory (--gpu H200).",
    ),
    LogSignature.of(
        # Only the ValueError names the variable; the same text without it is a warning, not a failure.
        r"set the env var SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1",
        "--context-length is longer than the model's own context length",
        "Lower --context-length to the model's limit (the log names it as the derived context_length), "
        "or leave it out to use the model's own.",
    ),
    LogSignature.of(
        r"Cannot access gated repo|You are trying to access a gated repo|GatedRepoError|"
        r"is restricted and you are not in the authorized list",
        "the model is gated on Hugging Face and the download was refused",
        "Set HF_TOKEN to a token of an account that has accepted the model's license on huggingface.co, "
        "then launch again.",
    ),
    LogSignature.of(
        r"Repository Not Found for url|is not a local folder and is not a valid model identifier|"
        r"RepositoryNotFoundError",
        "the model was not found on Hugging Face (Repository Not Found)",
        "Check the model id (org/name, exactly as on huggingface.co); if the repository is private, "
        "set HF_TOKEN.",
    ),
)

_MAX_TOTAL = re.compile(r"max_total_num_tokens=(\d+)")
_SWA_FULL = re.compile(r"full_layer_tokens=(\d+)")
_KV_ALLOCATED = re.compile(r"KV Cache is allocated\..*?#tokens: (\d+)")


class SGLangEngine(Engine):
    name = "sglang"
    label = "SGLang"
    owned_by = "sglang"
    sandbox_images = SGLANG_IMAGES
    load_route = "/v1/loads"
    metric_names = {
        "running": "sglang:num_running_reqs",
        "queued": "sglang:num_queue_reqs",
        "token_usage": "sglang:token_usage",
        "cache_hit_rate": "sglang:cache_hit_rate",
        "gen_throughput": "sglang:gen_throughput",
        "capacity": "sglang:max_total_num_tokens",
        "generated": "sglang:generation_tokens_total",
        "cached": "sglang:cached_tokens_total",
        "requests": "sglang:num_requests_total",
        "prompt_all": "sglang:prompt_tokens_total",
    }
    capabilities = Capabilities(
        streaming=True,
        reasoning_split=True,
        reasoning_effort=True,
        json_schema=True,
        regex=True,
        ebnf=True,
        native_generate=True,
        tool_calls=True,
        cache_report=True,
        # ResponsesRequest.tools takes only web_search_preview / code_interpreter, and has no `text` field.
        responses_tools=False,
        responses_json_schema=False,
    )
    # /health_generate runs a real one-token generation; /v1/models answers 200 before the model can serve.
    readiness = ReadinessProbe("GET", "/health_generate")
    phase_patterns = tuple((name, re.compile(pattern)) for name, pattern in _PHASES)
    signatures = _SIGNATURES
    info_path = "/server_info"
    receipt_steps = {
        "process started": "start",
        "weights downloaded": "weights",
        "weights loaded": "load",
        "kv cache allocated": "load",
        "kernels compiled": "compile",
        "cuda graphs captured": "graphs",
        "server ready": "warm-up",
    }

    def cache_env(self, root: str) -> dict[str, str]:
        # SGLang 0.5.12.post1 (srt/environ.py, compilation/, deep_gemm_wrapper/compile_utils.py):
        # SGLANG_CACHE_DIR holds torch compile's cache (with Inductor's and Triton's inside it) and
        # FlashInfer's autotune results; SGLANG_DG_CACHE_DIR DeepGEMM's JIT kernels (SGLang copies it to
        # DG_JIT_CACHE_DIR). Triton kernels compiled outside torch compile use TRITON_CACHE_DIR, and
        # Inductor outside SGLang's backend TORCHINDUCTOR_CACHE_DIR (default under /tmp).
        return {
            "SGLANG_CACHE_DIR": f"{root}/sglang",
            "SGLANG_DG_CACHE_DIR": f"{root}/deep_gemm",
            "TRITON_CACHE_DIR": f"{root}/triton",
            "TORCHINDUCTOR_CACHE_DIR": f"{root}/inductor",
        }

    @classmethod
    def load_fields(cls, body: Any) -> LoadFields:
        return parse_v1_loads(body)

    @classmethod
    def gpu_share_bytes(cls, spec: ServeSpec, gpu_mib: int) -> int | None:
        from sandserve.engines.sglang_memory import static_memory_bytes

        return static_memory_bytes(gpu_mib, tensor_parallel(spec), spec.engine_settings.extra_args)

    def summarise_info(self, data: dict[str, Any]) -> ServerInfo:
        return ServerInfo().with_values(**server_info_summary(data))

    def launch(self, spec: ServeSpec, *, host: str, port: int, api_key: str | None) -> Launch:
        _check_served_name(spec.served_name)
        settings = spec.engine_settings
        _check_parser("reasoning parser", "--reasoning-parser", settings.reasoning_parser, REASONING_PARSERS)
        _check_parser("tool-call parser", "--tool-call-parser", settings.tool_call_parser, TOOL_CALL_PARSERS)
        argv = [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            spec.model,
            "--served-model-name",
            spec.served_name,
            "--host",
            host,
            "--port",
            str(port),
            "--enable-cache-report",
            "--enable-metrics",
        ]
        if settings.reasoning_parser:
            argv += ["--reasoning-parser", settings.reasoning_parser]
        if settings.tool_call_parser:
            argv += ["--tool-call-parser", settings.tool_call_parser]
        if spec.context_length:
            argv += ["--context-length", str(spec.context_length)]
        # Batch work sends a low priority, so people's requests go ahead of its queue (engines/priority.py).
        argv += sglang_priority_flags(settings.extra_args)
        gpus = spec.resources.gpu_count if spec.uses_gpu else 1
        if gpus > 1 and not set(settings.extra_args) & _PARALLEL_FLAGS:  # a flag of the user's own wins
            argv += ["--dp-size" if settings.data_parallel else "--tp-size", str(gpus)]
        argv += list(settings.extra_args)
        env = dict(settings.env)
        if api_key:
            # SGLang takes its key only as a flag: a launcher adds it inside the process, from the
            # environment, so that it is on no command line (/proc/PID/cmdline is world-readable).
            argv[:3] = ["python3", "-c", KEY_FROM_ENV_LAUNCHER]
            env[API_KEY_ENV] = api_key
        # HF_TOKEN stays out: the provider hands it to the sandbox as an env var or a secret.
        return Launch(argv=argv, env=env, secrets=frozenset({api_key} if api_key else ()))

    def kv_pool_tokens(self, log_text: str) -> int | None:
        """The KV pool size in tokens: the scheduler's summary line, else the pool allocation lines."""
        for pattern in (_MAX_TOTAL, _SWA_FULL):
            found = pattern.findall(log_text)
            if found:
                return int(found[-1])
        # A sliding-window model allocates two pools (full and SWA layers); the full one is the larger.
        sizes = [int(n) for n in _KV_ALLOCATED.findall(log_text)]
        return max(sizes) if sizes else None

    # --- the dialect ----------------------------------------------------------------------------------------

    def constraint_fields(self, constraint: Constraint) -> dict[str, Any]:
        return {constraint.kind: constraint.value}

    def constraint_route(self, kind: str) -> str:
        return "SGLang /generate" if kind == "regex" else f"SGLang /generate {kind}"

    def generate_call(
        self, model: str, text: str, constraint: Constraint | None, sampling: dict[str, Any]
    ) -> GenerateCall:
        sampling = dict(sampling)
        if constraint is not None:
            # SGLang takes the schema as a JSON string inside sampling_params.
            value = json.dumps(constraint.value) if constraint.kind == "json_schema" else constraint.value
            sampling[constraint.kind] = value
        return GenerateCall(NATIVE_GENERATE_ROUTE, {"text": text, "sampling_params": sampling})

    def read_generation(self, answer: Any) -> tuple[str, str]:
        finish = (answer.get("meta_info") or {}).get("finish_reason")
        finish_type = finish.get("type") if isinstance(finish, dict) else (finish or "stop")
        return answer.get("text", ""), "length" if finish_type == "length" else str(finish_type)

    def reasoning_effort_fields(self, effort: str) -> tuple[dict[str, Any], str]:
        # The server hands reasoning_effort to the chat template, whatever the model.
        return (
            {"reasoning_effort": effort},
            "unknown model family: sent as reasoning_effort, which only some templates read",
        )

    def brief_answer_fields(self) -> dict[str, Any]:
        return {"reasoning_effort": "low"}


#: The environment variable that carries the API key to the launcher below (never shown: masked by name).
API_KEY_ENV = "SANDSERVE_SGLANG_API_KEY"
#: ``python3 -m sglang.launch_server ARGS --api-key KEY``, with KEY read from the environment inside the
#: process.
KEY_FROM_ENV_LAUNCHER = (
    "import os, runpy, sys; "
    f"sys.argv = ['sglang.launch_server', *sys.argv[1:], '--api-key', os.environ.pop({API_KEY_ENV!r})]; "
    "runpy.run_module('sglang.launch_server', run_name='__main__', alter_sys=True)"
)

SGLANG = SGLangEngine()


def server_info_summary(server_info_json: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """The capacity figures of ``GET /server_info``; never its api_key (SGLang returns it in plain text)."""
    info = json.loads(server_info_json) if isinstance(server_info_json, (str, bytes)) else server_info_json
    states = info.get("internal_states") or [{}]
    internal = states[0] if isinstance(states, list) and states and isinstance(states[0], dict) else {}

    def first(*keys: str) -> Any:
        for source in (info, internal):
            for key in keys:
                if source.get(key) is not None:
                    return source[key]
        return None

    return {
        "max_total_num_tokens": first("max_total_num_tokens"),
        "max_running_requests": first("max_running_requests"),
        "context_len": first("context_len", "context_length"),
        "version": info.get("version"),
    }


def _check_served_name(name: str) -> None:
    if ":" in name:
        raise ConfigError(
            f"The served model name {name!r} contains ':', which SGLang does not accept.",
            hint=f"Serve it under a name without ':', e.g. {name.replace(':', '-')!r}.",
        )


def _check_parser(what: str, flag: str, value: str | None, valid: tuple[str, ...]) -> None:
    if value is not None and value not in valid:
        raise ConfigError(
            f"SGLang has no {what} {value!r} ({flag}).",
            hint=f"Use one of: {', '.join(valid)}; or 'none' to switch it off.",
        )


_PARALLEL_FLAGS = frozenset({"--tp", "--tp-size", "--tensor-parallel-size", "--dp", "--dp-size"})


def tensor_parallel(spec: ServeSpec) -> int:
    """How many GPUs one copy of the model is split over (``--tp-size``): all of them, unless each holds
    its own copy (data parallel)."""
    if not spec.uses_gpu or spec.engine_settings.data_parallel:
        return 1
    return spec.resources.gpu_count
