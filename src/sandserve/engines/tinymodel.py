"""A tiny random-weight llama model, written locally as GGUF, so the local engine has something to serve.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the Python standard library's own source
files, and the weights are seeded random numbers. Output is gibberish by construction, but everything the
engine constrains (JSON schemas, grammars, forced tool calls) is still valid, which is what tests and demos
need.

The recipe is deterministic: the same seed gives a byte-identical file on the same machine.
"""

from __future__ import annotations

import json
import os
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from sandserve.paths import cache_dir

TINY_MODEL_NAME = "tiny-random-llama"
DISCLAIMER = "random weights: output is gibberish by construction; constrained output is still valid"

# Bump when anything below changes the bytes written, so stale cached files are not reused.
RECIPE_VERSION = "v1"

VOCAB_SIZE = 2048
HIDDEN_SIZE = 128
LAYER_COUNT = 2
HEAD_COUNT = 4
KV_HEAD_COUNT = 2
FFN_SIZE = 384
CONTEXT_LENGTH = 32768
RMS_NORM_EPS = 1e-6
ROPE_FREQ_BASE = 10000.0
INIT_STD = 0.02

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CONTROL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
USER_DEFINED_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
TOOL_CALL_TOKEN = "<tool_call>"

TRAINING_TEXT_BYTES = 4_000_000

# ChatML / Qwen3-style. Unlike Qwen3 there is no newline right after <tool_call>: forcing a tool call with a
# logit bias on the <tool_call> token relies on the JSON following it immediately.
CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments \
within <tool_call></tool_call> XML tags:\\n<tool_call>{\\"name\\": <function-name>, \\"arguments\\": \
<args-json-object>}</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string \
and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n')\
.split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') \
+ '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""


@dataclass(frozen=True)
class TrainedVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]

    def token_id(self, token: str) -> int:
        return self.tokens.index(token)


def tiny_model_path(seed: int = 0) -> Path:
    """Where the tiny model for ``seed`` lives in the cache (it may not be written yet)."""
    return cache_dir() / "models" / f"tiny-{RECIPE_VERSION}-seed{seed}.gguf"


def ensure_tiny_model(seed: int = 0) -> Path:
    """Return the cached tiny model for ``seed``, writing it first if missing (about a second)."""
    path = tiny_model_path(seed)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent writers each write their own temp file; os.replace makes the last one win atomically, and
    # since the recipe is deterministic every winner has the same bytes.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write_tiny_model(tmp_path, seed)
        tmp_path.chmod(0o644)  # mkstemp makes it 0600; the cache is shared like any other
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def write_tiny_model(path: Path, seed: int = 0) -> None:
    """Write the tiny model to ``path`` (not atomically: ``ensure_tiny_model`` handles that)."""
    vocab = train_vocab()
    writer = gguf.GGUFWriter(path, "llama")
    _add_model_metadata(writer)
    _add_tokenizer_metadata(writer, vocab)
    for name, tensor in _random_tensors(seed):
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_corrupt_model(path: Path, source: Path | None = None) -> Path:
    """Write a GGUF whose header is valid but whose tensor data is cut short: llama-server dies loading it.

    ``source`` is the model to cut (default: the seed-0 tiny model).
    """
    data = (source or ensure_tiny_model()).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def training_texts(limit_bytes: int = TRAINING_TEXT_BYTES) -> Iterator[str]:
    """The standard library's top-level modules, in name order, until about ``limit_bytes`` of text."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for source in sorted(stdlib.glob("*.py")):
        text = source.read_text(encoding="utf-8", errors="replace")
        yield text
        total += len(text)
        if total >= limit_bytes:
            return


def train_vocab() -> TrainedVocab:
    """Train the byte-level BPE (deterministic: checked across runs and thread counts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special_tokens = [*CONTROL_TOKENS, *USER_DEFINED_TOKENS]
    tokenizer = Tokenizer(models.BPE())
    # The same split as llama.cpp's "gpt-2" pre-tokenizer.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_texts(), trainer)

    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if len(tokens) != VOCAB_SIZE or [vocab[t] for t in tokens] != list(range(VOCAB_SIZE)):
        raise RuntimeError(f"tokenizer training gave {len(tokens)} tokens, expected {VOCAB_SIZE} dense ids")
    return TrainedVocab(
        tokens=tokens,
        token_types=[_token_type(token) for token in tokens],
        merges=_merges(json.loads(tokenizer.to_str())["model"]["merges"]),
    )


def _token_type(token: str) -> int:
    if token in CONTROL_TOKENS:
        return gguf.TokenType.CONTROL
    if token in USER_DEFINED_TOKENS:
        return gguf.TokenType.USER_DEFINED
    return gguf.TokenType.NORMAL


def _merges(raw: list[str] | list[list[str]]) -> list[str]:
    # tokenizers >= 0.20 serialises a merge as a pair, older versions as "a b".
    return [merge if isinstance(merge, str) else " ".join(merge) for merge in raw]


def _add_model_metadata(writer: gguf.GGUFWriter) -> None:
    writer.add_name(TINY_MODEL_NAME)
    writer.add_description(DISCLAIMER)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(VOCAB_SIZE)
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(HIDDEN_SIZE)
    writer.add_block_count(LAYER_COUNT)
    writer.add_feed_forward_length(FFN_SIZE)
    writer.add_head_count(HEAD_COUNT)
    writer.add_head_count_kv(KV_HEAD_COUNT)
    writer.add_rope_dimension_count(HIDDEN_SIZE // HEAD_COUNT)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)


def _add_tokenizer_metadata(writer: gguf.GGUFWriter, vocab: TrainedVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.token_id(ENDOFTEXT))
    writer.add_eos_token_id(vocab.token_id(IM_END))
    writer.add_eot_token_id(vocab.token_id(IM_END))
    writer.add_pad_token_id(vocab.token_id(ENDOFTEXT))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def _random_tensors(seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """Weights in llama.cpp's layout (numpy shape = reversed ggml ne: (out_features, in_features))."""
    rng = np.random.default_rng(seed)
    head_dim = HIDDEN_SIZE // HEAD_COUNT
    kv_size = KV_HEAD_COUNT * head_dim

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(INIT_STD)).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(HIDDEN_SIZE, dtype=np.float32)

    yield "token_embd.weight", matrix(VOCAB_SIZE, HIDDEN_SIZE)
    for layer in range(LAYER_COUNT):
        prefix = f"blk.{layer}"
        yield f"{prefix}.attn_norm.weight", norm()
        yield f"{prefix}.attn_q.weight", matrix(HIDDEN_SIZE, HIDDEN_SIZE)
        yield f"{prefix}.attn_k.weight", matrix(kv_size, HIDDEN_SIZE)
        yield f"{prefix}.attn_v.weight", matrix(kv_size, HIDDEN_SIZE)
        yield f"{prefix}.attn_output.weight", matrix(HIDDEN_SIZE, HIDDEN_SIZE)
        yield f"{prefix}.ffn_norm.weight", norm()
        yield f"{prefix}.ffn_gate.weight", matrix(FFN_SIZE, HIDDEN_SIZE)
        yield f"{prefix}.ffn_up.weight", matrix(FFN_SIZE, HIDDEN_SIZE)
        yield f"{prefix}.ffn_down.weight", matrix(HIDDEN_SIZE, FFN_SIZE)
    yield "output_norm.weight", norm()
    yield "output.weight", matrix(VOCAB_SIZE, HIDDEN_SIZE)
