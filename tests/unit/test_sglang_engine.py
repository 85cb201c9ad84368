"""The SGLang engine: launch command per preset, boot phases, KV pool size and failure diagnosis from its
log."""

from __future__ import annotations

import json
import shlex

import pytest
from standins.sglang_state import REASONING_PARSERS as STANDIN_REASONING_PARSERS
from standins.sglang_state import TOOL_CALL_PARSERS as STANDIN_TOOL_CALL_PARSERS

from sandserve.engines.base import diagnose, phases_in
from sandserve.engines.sglang import (
    API_KEY_ENV,
    KEY_FROM_ENV_LAUNCHER,
    REASONING_PARSERS,
    SGLANG,
    TOOL_CALL_PARSERS,
    server_info_summary,
)
from sandserve.errors import ConfigError
from sandserve.masking import MASK
from sandserve.presets import PRESETS
from sandserve.serve.resolve import resolve_spec
from sandserve.spec import AuthMode, ProviderName, ServeSpec

# The stand-in's lists were read from SGLang 0.5.12.post1's source on their own (facts/sglang.md), so the
# engine's lists are checked against them.
FACT_TOOL_CALL_PARSERS = set(STANDIN_TOOL_CALL_PARSERS)
FACT_REASONING_PARSERS = set(STANDIN_REASONING_PARSERS)
FACT_FLAGS = {
    "--model-path",
    "--served-model-name",
    "--host",
    "--port",
    "--api-key",
    "--enable-cache-report",
    "--enable-metrics",
    "--mem-fraction-static",
    "--cuda-graph-max-bs",
    "--chunked-prefill-size",
    "--max-running-requests",
    "--context-length",
    "--schedule-policy",
    "--tp",
    "--dp",
    "--tp-size",
    "--dp-size",
    "--trust-remote-code",
    "--reasoning-parser",
    "--tool-call-parser",
    "--enable-priority-scheduling",
    "--default-priority-value",
}
SGLANG_PRESETS = [preset for preset in PRESETS if preset.engine == "sglang"]


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _spec(model: str, **overrides: object) -> ServeSpec:
    return resolve_spec(model, provider=ProviderName.DAYTONA, **overrides)  # type: ignore[arg-type]


# --- launch ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", SGLANG_PRESETS, ids=lambda p: p.name)
def test_every_sglang_preset_launches_with_known_flags(preset) -> None:
    spec = _spec(preset.name)
    launch = SGLANG.launch(spec, host="0.0.0.0", port=8000, api_key=None)
    argv = launch.argv

    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    assert {arg for arg in argv if arg.startswith("--")} <= FACT_FLAGS
    assert _flag(argv, "--model-path") == preset.model
    assert _flag(argv, "--served-model-name") == preset.served_name
    assert ":" not in preset.served_name
    assert _flag(argv, "--host") == "0.0.0.0"
    assert _flag(argv, "--port") == "8000"
    assert "--enable-cache-report" in argv and "--enable-metrics" in argv
    assert _flag(argv, "--reasoning-parser") == preset.reasoning_parser
    assert _flag(argv, "--tool-call-parser") == preset.tool_call_parser
    assert _flag(argv, "--reasoning-parser") in FACT_REASONING_PARSERS | {None}
    assert _flag(argv, "--tool-call-parser") in FACT_TOOL_CALL_PARSERS | {None}
    assert "--api-key" not in argv and not launch.secrets
    assert "HF_TOKEN" not in launch.env and "HF_TOKEN" not in launch.shell_command()


def test_gpt_oss_120b_has_its_three_memory_settings() -> None:
    launch = SGLANG.launch(_spec("gpt-oss-120b"), host="0.0.0.0", port=8000, api_key=None)

    assert _flag(launch.argv, "--mem-fraction-static") == "0.93"
    assert _flag(launch.argv, "--cuda-graph-max-bs") == "64"
    assert launch.env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert launch.shell_command().startswith("PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 -m ")


def test_api_key_only_in_key_mode_and_masked_when_shown() -> None:
    spec = _spec("gpt-oss-20b", auth=AuthMode.KEY)
    assert spec.api_key
    launch = SGLANG.launch(spec, host="0.0.0.0", port=8000, api_key=spec.api_key)

    assert spec.api_key not in launch.argv  # on no command line: the launcher reads it from the environment
    assert launch.env[API_KEY_ENV] == spec.api_key and spec.api_key in launch.secrets
    assert launch.argv[:3] == ["python3", "-c", KEY_FROM_ENV_LAUNCHER]
    assert f"{API_KEY_ENV}={spec.api_key}" in shlex.split(launch.shell_command())  # the session gets it...
    assert spec.api_key not in launch.display_command()  # ...what is shown does not
    assert launch.display_env()[API_KEY_ENV] == MASK

    token_mode = SGLANG.launch(_spec("gpt-oss-20b"), host="0.0.0.0", port=8000, api_key=None)
    assert "--api-key" not in token_mode.argv


def test_host_hf_token_and_context_length() -> None:
    spec = _spec("qwen3-8b", hf_token="hf_secret", context_length=32768, extra_args=("--tp", "1"))
    launch = SGLANG.launch(spec, host="127.0.0.1", port=30000, api_key=None)

    assert _flag(launch.argv, "--host") == "127.0.0.1"
    assert _flag(launch.argv, "--context-length") == "32768"
    assert launch.argv[-2:] == ["--tp", "1"]  # extra args last, so they win
    assert "hf_secret" not in launch.shell_command()


def test_auto_parsers_pass_through_and_none_omits() -> None:
    auto = SGLANG.launch(_spec("someorg/some-model"), host="0.0.0.0", port=8000, api_key=None)
    assert _flag(auto.argv, "--reasoning-parser") == "auto"
    assert _flag(auto.argv, "--tool-call-parser") == "auto"

    off = SGLANG.launch(
        _spec("qwen3-8b", reasoning_parser="none", tool_call_parser="none"),
        host="0.0.0.0",
        port=8000,
        api_key=None,
    )
    assert "--reasoning-parser" not in off.argv and "--tool-call-parser" not in off.argv


def test_unknown_parser_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        SGLANG.launch(_spec("qwen3-8b", reasoning_parser="qwen4"), host="0.0.0.0", port=8000, api_key=None)
    assert "qwen4" in str(caught.value) and "qwen3-thinking" in str(caught.value)

    with pytest.raises(ConfigError) as caught:
        SGLANG.launch(_spec("qwen3-8b", tool_call_parser="qwen2"), host="0.0.0.0", port=8000, api_key=None)
    assert "qwen3_coder" in str(caught.value)


def test_served_name_with_colon_is_refused_with_a_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        SGLANG.launch(_spec("qwen3-8b", served_name="qwen3:8b"), host="0.0.0.0", port=8000, api_key=None)
    assert "'qwen3-8b'" in str(caught.value)


def test_capabilities_and_readiness() -> None:
    missing = [name for name, held in SGLANG.capabilities.as_dict().items() if not held]
    # SGLang 0.5.12.post1's ResponsesRequest: no function tools, no `text` (JSON schema) field.
    assert missing == ["responses_tools", "responses_json_schema"]
    assert (SGLANG.readiness.method, SGLANG.readiness.path) == ("GET", "/health_generate")
    assert [name for name, _ in SGLANG.phase_patterns] == [
        "process started",
        "weights downloaded",
        "weights loaded",
        "kv cache allocated",
        "kernels compiled",
        "cuda graphs captured",
        "server ready",
    ]


# --- the start-up log --------------------------------------------------------------------------------------

# gpt-oss-20b on an H100, SGLang 0.5.12 (the lines are SGLang's own: model_runner.py, weight_utils.py,
# memory_pool.py, scheduler.py, http_server.py).
BOOT_START = """\
[2026-11-20 09:14:02] server_args=ServerArgs(model_path='openai/gpt-oss-20b', tokenizer_path='openai/gpt-oss-20b', host='0.0.0.0', port=8000, api_key=None, served_model_name='gpt-oss-20b', reasoning_parser='gpt-oss', tool_call_parser='gpt-oss', enable_cache_report=True, enable_metrics=True)
[2026-11-20 09:14:05] Using default HuggingFace chat template with detected content format: string
[2026-11-20 09:14:12] Init torch distributed begin.
[2026-11-20 09:14:12] Init torch distributed ends. elapsed=0.21 s, mem usage=0.10 GB
[2026-11-20 09:14:13] Load weight begin. avail mem=78.41 GB
[2026-11-20 09:14:13] Using model weights format ['*.safetensors']
"""  # noqa: E501 - SGLang's log lines, verbatim
BOOT_SHARDS = """\
Loading safetensors checkpoint shards:   0% Completed | 0/3 [00:00<?, ?it/s]
Loading safetensors checkpoint shards:  33% Completed | 1/3 [00:01<00:03,  1.62s/it]
Loading safetensors checkpoint shards:  67% Completed | 2/3 [00:03<00:01,  1.60s/it]
Loading safetensors checkpoint shards: 100% Completed | 3/3 [00:04<00:00,  1.41s/it]
"""
BOOT_LOADED = """\
[2026-11-20 09:15:14] Load weight end. elapsed=61.37 s, type=GptOssForCausalLM, quant=mxfp4, avail mem=64.12 GB, mem usage=14.29 GB.
[2026-11-20 09:15:14] Using KV cache dtype: torch.bfloat16
[2026-11-20 09:15:14] Use sliding window memory pool. full_layer_tokens=1220512, swa_layer_tokens=976384
[2026-11-20 09:15:14] KV Cache is allocated. #tokens: 976384, K size: 11.18 GB, V size: 11.18 GB
[2026-11-20 09:15:14] KV Cache is allocated. #tokens: 1220512, K size: 13.97 GB, V size: 13.97 GB
[2026-11-20 09:15:14] Memory pool end. avail mem=9.87 GB
[2026-11-20 09:15:15] Capture cuda graph begin. This can take up to several minutes. avail mem=9.31 GB
[2026-11-20 09:15:15] Capture cuda graph bs [1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256]
Capturing batches (bs=1 avail_mem=8.71 GB): 100%|██████████| 20/20 [00:09<00:00,  2.11it/s]
[2026-11-20 09:15:24] Capture cuda graph end. Time elapsed: 9.41 s. mem usage=0.60 GB. avail mem=8.71 GB.
[2026-11-20 09:15:25] max_total_num_tokens=1220512, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=4096, context_len=131072, available_gpu_mem=8.71 GB
[2026-11-20 09:15:26] INFO:     Started server process [412]
[2026-11-20 09:15:26] INFO:     Waiting for application startup.
[2026-11-20 09:15:26] INFO:     Application startup complete.
[2026-11-20 09:15:26] INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)
[2026-11-20 09:15:27] INFO:     127.0.0.1:40512 - "GET /model_info HTTP/1.1" 200 OK
[2026-11-20 09:15:27] Prefill batch, #new-seq: 1, #new-token: 7, #cached-token: 0, token usage: 0.00, #running-req: 0, #queue-req: 0,
[2026-11-20 09:15:28] INFO:     127.0.0.1:40516 - "POST /generate HTTP/1.1" 200 OK
[2026-11-20 09:15:28] The server is fired up and ready to roll!
"""  # noqa: E501 - SGLang's log lines, verbatim
BOOT_LOG = BOOT_START + BOOT_SHARDS + BOOT_LOADED
ALL_PHASES = [
    "process started",
    "weights downloaded",
    "weights loaded",
    "kv cache allocated",
    "cuda graphs captured",
    "server ready",
]


def test_phases_of_a_whole_boot_in_order() -> None:
    assert phases_in(SGLANG, BOOT_LOG) == ALL_PHASES


@pytest.mark.parametrize(
    ("log", "phases"),
    [
        (BOOT_START, ["process started"]),  # weights are still downloading inside the load step
        (BOOT_START + BOOT_SHARDS.splitlines()[0], ["process started", "weights downloaded"]),
        (
            "[2026-11-20 09:14:13] Load weight begin. avail mem=78.41 GB\n"
            "[2026-11-20 09:14:13] Found local HF snapshot for openai/gpt-oss-20b at "
            "/root/.cache/huggingface/hub/models--openai--gpt-oss-20b/snapshots/6cee5e8; skipping "
            "download.\n",
            ["weights downloaded"],
        ),
        (BOOT_LOG.split("Capture cuda graph begin")[0], ALL_PHASES[:4]),
    ],
    ids=["downloading", "shards loading", "cache hit", "capturing"],
)
def test_phases_of_a_boot_in_progress(log: str, phases: list[str]) -> None:
    assert phases_in(SGLANG, log) == phases


def test_kv_pool_from_the_scheduler_summary() -> None:
    assert SGLANG.kv_pool_tokens(BOOT_LOG) == 1_220_512
    assert SGLANG.kv_pool_tokens(BOOT_START) is None


@pytest.mark.parametrize(
    ("lines", "tokens"),
    [
        # a sliding-window model: the SWA pool is logged first and is the smaller one
        (BOOT_LOADED.split("[2026-11-20 09:15:14] KV")[0].splitlines()[-1], 1_220_512),
        (
            "[2026-11-20 09:15:14] KV Cache is allocated. #tokens: 976384, K size: 11.18 GB, V size: 11.18 "
            "GB\n"
            "[2026-11-20 09:15:14] KV Cache is allocated. #tokens: 1220512, K size: 13.97 GB, V size: 13.97 "
            "GB",
            1_220_512,
        ),
        (
            "[2026-05-24 00:52:54] KV Cache is allocated. dtype: torch.bfloat16, #tokens: 1707904, K size: "
            "117.28 GB, V size: 117.28 GB",
            1_707_904,
        ),
        (
            "[2025-01-23 19:35:20 TP0] KV Cache is allocated. K size: 27.13 GB, V size: 27.13 GB.\n"
            "[2025-01-23 19:35:27 TP0] max_total_num_tokens=444500, max_prefill_tokens=16384, "
            "max_running_requests=2049, context_len=131072",
            444_500,
        ),
    ],
    ids=["swa summary", "two pools", "dtype variant", "0.4 format"],
)
def test_kv_pool_from_other_log_shapes(lines: str, tokens: int) -> None:
    assert SGLANG.kv_pool_tokens(lines) == tokens


def test_a_clean_boot_has_no_diagnosis() -> None:
    assert diagnose(SGLANG, BOOT_LOG) is None


# --- failures ---------------------------------------------------------------------------------------------

KV_POOL = "KV cache pool"
HOST_OOM = "host RAM"
CUDA_OOM = "CUDA out of memory"
CONTEXT = "--context-length"
GATED = "gated"
NOT_FOUND = "not found"

SITE = "/sgl-workspace/sglang/python/sglang"
MAIN = (
    "Traceback (most recent call last):\n"
    '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    '  File "<frozen runpy>", line 88, in _run_code\n'
    f'  File "{SITE}/launch_server.py", line 32, in <module>\n'
    "    run_server(server_args)\n"
)
SIGQUIT = "[2026-11-20 09:15:15] Received sigquit from a child process. It usually means the child failed.\n"

KV_OOM_LOG = (
    BOOT_START
    + BOOT_SHARDS
    + (
        "[2026-11-20 09:16:40] Load weight end. elapsed=146.02 s, type=GptOssForCausalLM, quant=mxfp4, avail "
        "mem=12.10 GB, mem usage=66.31 GB.\n"
        "[2026-11-20 09:16:40] Scheduler hit an exception: Traceback (most recent call last):\n"
        f'  File "{SITE}/srt/managers/scheduler.py", line 3571, in run_scheduler_process\n'
        "    scheduler = Scheduler(\n"
        f'  File "{SITE}/srt/model_executor/pool_configurator.py", line 86, in __post_init__\n'
        "    raise RuntimeError(msg)\n"
        "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. Current value: "
        "mem_fraction_static=0.85\n\n" + SIGQUIT
    )
)
HOST_OOM_LOG = (
    BOOT_START
    + BOOT_SHARDS.splitlines(keepends=True)[0]
    + MAIN
    + (
        f'  File "{SITE}/srt/entrypoints/engine.py", line 1277, in _wait_for_scheduler_ready\n'
        "    raise _scheduler_died_error(i, scheduler_procs[i])\n"
        "RuntimeError: Rank 0 scheduler died during initialization (exit code: -9). If exit code is -9 "
        "(SIGKILL), a common cause is the OS OOM killer. Run `dmesg -T | grep -i oom` to check.\n"
    )
)
HOST_OOM_OLD_LOG = BOOT_START + (
    "[2025-03-08 12:28:52] Rank 0 scheduler is dead. Please check if there are relevant logs.\n"
    "[2025-03-08 12:28:53] Exit code: -9\n"
)
CUDA_OOM_LOG = (
    BOOT_START
    + BOOT_SHARDS
    + BOOT_LOADED.split("Capturing batches")[0]
    + (
        "[2026-11-20 09:15:16] Scheduler hit an exception: Traceback (most recent call last):\n"
        f'  File "{SITE}/srt/managers/scheduler.py", line 3571, in run_scheduler_process\n'
        "Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
        "total capacity of 79.19 GiB of which 1.05 GiB is free. Including non-PyTorch memory, this process "
        "has 78.13 GiB memory in use. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.\n"
        "Possible solutions:\n"
        "1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)\n"
        "2. set --cuda-graph-max-bs to a smaller value (e.g., 16)\n"
        "\n" + SIGQUIT
    )
)
CONTEXT_LOG = MAIN + (
    f'  File "{SITE}/srt/configs/model_config.py", line 421, in _derive_context_length\n'
    "    raise ValueError(\n"
    "ValueError: Warning: User-specified context_length (262144) is greater than the derived context_length "
    "(131072). This may lead to incorrect model outputs or CUDA errors. Note that the derived context_length "
    "may differ from max_position_embeddings in the model's config. To allow overriding this maximum, set "
    "the env var SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1\n"
)
GATED_LOG = MAIN + (
    "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6740f3a1-3c1b2d4e)\n"
    "\n"
    "Cannot access gated repo for url "
    "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.\n"
    "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted. You must have access to it and be "
    "authenticated to access it. Please log in.\n"
    "\n"
    "OSError: You are trying to access a gated repo.\n"
    "Make sure to have access to it at https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct.\n"
)
GATED_403_LOG = MAIN + (
    "OSError: You are trying to access a gated repo.\n"
    "Make sure to have access to it at https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct.\n"
    "403 Client Error. (Request ID: Root=1-6ab9bcc8)\n"
    "\n"
    "Cannot access gated repo for url "
    "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json.\n"
    "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted and you are not in the authorized list. "
    "Visit https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct to ask for access.\n"
)
NOT_FOUND_LOG = MAIN + (
    "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-6740f3a1)\n\n"
    "Repository Not Found for url: https://huggingface.co/openai/gpt-oss-21b/resolve/main/config.json.\n"
    "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
    "If you are trying to access a private or gated repo, make sure you are authenticated.\n\n"
    "OSError: openai/gpt-oss-21b is not a local folder and is not a valid model identifier listed on "
    "'https://huggingface.co/models'\n"
)


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (KV_OOM_LOG, KV_POOL),
        (HOST_OOM_LOG, HOST_OOM),
        (HOST_OOM_OLD_LOG, HOST_OOM),
        (CUDA_OOM_LOG, CUDA_OOM),
        (CONTEXT_LOG, CONTEXT),
        (GATED_LOG, GATED),
        (GATED_403_LOG, GATED),
        (NOT_FOUND_LOG, NOT_FOUND),
    ],
    ids=[
        "kv pool (sigquit)",
        "host oom",
        "host oom 0.4",
        "cuda oom",
        "context",
        "gated 401",
        "gated 403",
        "not found",
    ],
)
def test_failure_is_recognised(log: str, expected: str) -> None:
    diagnosis = diagnose(SGLANG, log)
    assert diagnosis is not None
    assert expected in diagnosis.summary
    assert diagnosis.fix


def test_every_signature_has_a_sentence_and_a_fix() -> None:
    for signature in SGLANG.signatures:
        assert signature.summary and not signature.summary.endswith(".")  # it is put inside a sentence
        assert signature.fix.endswith(".")


def test_the_fixes_name_the_right_knobs() -> None:
    assert "--mem-fraction-static" in diagnose(SGLANG, KV_OOM_LOG).fix  # type: ignore[union-attr]
    assert "HF_TOKEN" in diagnose(SGLANG, GATED_LOG).fix  # type: ignore[union-attr]
    assert "--cuda-graph-max-bs" in diagnose(SGLANG, CUDA_OOM_LOG).fix  # type: ignore[union-attr]


def test_a_context_warning_alone_is_not_a_failure() -> None:
    warned = BOOT_LOG.replace(
        "[2026-11-20 09:14:12] Init torch distributed begin.",
        "[2026-11-20 09:14:03] Warning: User-specified context_length (262144) is greater than the derived "
        "context_length (131072). This may lead to incorrect model outputs or CUDA errors.\n"
        "[2026-11-20 09:14:12] Init torch distributed begin.",
    )
    assert diagnose(SGLANG, warned) is None


# --- /server_info -------------------------------------------------------------------------------------------


def test_server_info_summary_never_returns_the_api_key() -> None:
    info = {
        "model_path": "openai/gpt-oss-20b",
        "api_key": "sk-secret",
        "context_length": None,
        "max_running_requests": None,
        "max_total_num_tokens": 1220512,
        "version": "0.5.12.post1",
        "internal_states": [{"max_running_requests": 4096, "context_len": 131072}],
    }
    for given in (info, json.dumps(info)):
        summary = server_info_summary(given)
        assert summary == {
            "max_total_num_tokens": 1220512,
            "max_running_requests": 4096,
            "context_len": 131072,
            "version": "0.5.12.post1",
        }
        assert "sk-secret" not in json.dumps(summary)


def test_the_engine_knows_every_parser_sglang_accepts() -> None:
    assert set(TOOL_CALL_PARSERS) == FACT_TOOL_CALL_PARSERS
    assert set(REASONING_PARSERS) == FACT_REASONING_PARSERS
