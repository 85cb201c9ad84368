"""The locally written tiny model: deterministic bytes, the metadata llama.cpp needs, and a real llama-server
serving it (chat, JSON schema, reasoning split, forced tool calls) or refusing a corrupt copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import pytest
from polling import poll_until

from sandserve.engines.llamacpp_build import ensure_llama_server
from sandserve.engines.tinymodel import (
    CONTROL_TOKENS,
    DISCLAIMER,
    TINY_MODEL_NAME,
    TOOL_CALL_TOKEN,
    USER_DEFINED_TOKENS,
    VOCAB_SIZE,
    ensure_tiny_model,
    tiny_model_path,
    write_corrupt_model,
)
from sandserve.providers.local import free_port

READY_TIMEOUT_S = 60


@pytest.fixture
def temp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SANDSERVE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("tiny-cache")
    with pytest.MonkeyPatch.context() as patch:  # only while writing: the engine build uses the user's cache
        patch.setenv("SANDSERVE_CACHE_DIR", str(cache))
        path = ensure_tiny_model()
    yield path


def fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}


# --- the file ---------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def written(cache: str, seed: int) -> bytes:
        monkeypatch.setenv("SANDSERVE_CACHE_DIR", str(tmp_path / cache))
        return ensure_tiny_model(seed).read_bytes()

    first = written("a", 0)
    assert written("b", 0) == first
    assert written("c", 1) != first


def test_written_once_atomically_into_the_cache(temp_cache: Path) -> None:
    path = ensure_tiny_model(seed=3)
    assert path == temp_cache / "models" / path.name == tiny_model_path(3)
    assert path.name.startswith("tiny-") and path.name.endswith("-seed3.gguf")
    stamp = path.stat().st_mtime_ns
    assert ensure_tiny_model(seed=3) == path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file may be left behind"


def test_metadata_reads_back(model_path: Path) -> None:
    meta = fields(model_path)
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta["tokenizer.ggml.token_type"]

    assert meta["general.architecture"] == "llama"
    assert meta["general.name"] == TINY_MODEL_NAME
    assert meta["llama.embedding_length"] == 128
    assert meta["llama.block_count"] == 2
    assert meta["llama.attention.head_count"] == 4
    assert meta["llama.attention.head_count_kv"] == 2
    assert meta["llama.feed_forward_length"] == 384
    assert meta["llama.context_length"] == 32768
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert len(tokens) == len(types) == VOCAB_SIZE == meta["llama.vocab_size"]
    assert len(meta["tokenizer.ggml.merges"]) > 1000
    for token in CONTROL_TOKENS:
        assert types[tokens.index(token)] == gguf.TokenType.CONTROL
    for token in USER_DEFINED_TOKENS:
        assert types[tokens.index(token)] == gguf.TokenType.USER_DEFINED
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert tokens[meta["tokenizer.ggml.eot_token_id"]] == "<|im_end|>"
    template = meta["tokenizer.chat_template"]
    assert "<tool_call>{" in template, "the tool-call forcing recipe needs no newline after <tool_call>"
    assert "enable_thinking" in template and "<think>" in template
    assert DISCLAIMER.startswith("random weights")


def test_weights_are_float32_with_llama_shapes(model_path: Path) -> None:
    tensors = {tensor.name: tensor for tensor in gguf.GGUFReader(model_path).tensors}
    assert all(tensor.tensor_type == gguf.GGMLQuantizationType.F32 for tensor in tensors.values())
    assert list(tensors["token_embd.weight"].shape) == [128, VOCAB_SIZE]
    assert list(tensors["blk.1.attn_k.weight"].shape) == [128, 64]
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [384, 128]
    assert 800_000 < sum(int(tensor.n_elements) for tensor in tensors.values()) < 1_000_000


# --- a real llama-server ----------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            return json.load(response)

    def chat(self, **body: Any) -> dict[str, Any]:
        return self.post("/v1/chat/completions", {"model": TINY_MODEL_NAME, **body})

    def token_id(self, text: str) -> int:
        tokens = self.post("/tokenize", {"content": text})["tokens"]
        assert len(tokens) == 1, f"{text!r} should be one token, got {tokens}"
        return tokens[0]


def launch(binary: Path, model: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [
        str(binary),
        "-m",
        str(model),
        "--alias",
        TINY_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        "8192",
        "-np",
        "2",
        "-t",
        "1",
        "--jinja",
        "--reasoning-format",
        "deepseek",
        "--no-ui",
        "--offline",
        "--metrics",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_healthy(server: Server) -> None:
    def healthy() -> bool:
        if server.process.poll() is not None:
            pytest.fail(
                f"llama-server exited ({server.process.returncode}):\n{server.log_path.read_text()[-3000:]}"
            )
        try:
            return bool(server.get("/health").get("status") == "ok")
        except (OSError, urllib.error.URLError):
            return False

    poll_until(healthy, what="llama-server healthy", timeout=READY_TIMEOUT_S)


@pytest.fixture(scope="module")
def llama_server_binary() -> Path:
    return ensure_llama_server()  # the user's cached build; builds it (minutes) only if missing


@pytest.fixture(scope="module")
def server(
    llama_server_binary: Path, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("server") / "llama-server.log"
    process, port = launch(llama_server_binary, model_path, log_path)
    try:
        running = Server(process, f"http://127.0.0.1:{port}", log_path)
        wait_healthy(running)
        yield running
    finally:
        stop(process)


ENGINE_TIMEOUT = pytest.mark.timeout(1800)  # the first use may build llama.cpp


@ENGINE_TIMEOUT
def test_server_reports_tool_capable_template(server: Server) -> None:
    props = server.get("/props")
    caps = props["chat_template_caps"]
    assert caps["supports_tools"] and caps["supports_tool_calls"] and caps["supports_system_role"]
    assert props["model_alias"] == TINY_MODEL_NAME
    assert [model["id"] for model in server.get("/v1/models")["data"]] == [TINY_MODEL_NAME]


@ENGINE_TIMEOUT
def test_chat_completion_answers(server: Server) -> None:
    reply = server.chat(messages=[{"role": "user", "content": "Hello"}], max_tokens=16, temperature=0)
    choice = reply["choices"][0]
    assert choice["finish_reason"] in ("length", "stop")
    assert isinstance(choice["message"]["content"], str)
    assert reply["usage"]["completion_tokens"] > 0


@ENGINE_TIMEOUT
def test_json_schema_output_parses(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["positive", "negative"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 10},
        },
        "required": ["label", "score"],
        "additionalProperties": False,
    }
    for seed in range(3):
        reply = server.chat(
            messages=[{"role": "user", "content": "Classify: what a lovely day"}],
            response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
            chat_template_kwargs={"enable_thinking": False},
            max_tokens=256,
            temperature=1.0,
            seed=seed,
        )
        verdict = json.loads(reply["choices"][0]["message"]["content"])
        assert verdict["label"] in ("positive", "negative")
        assert 0 <= verdict["score"] <= 10


@ENGINE_TIMEOUT
def test_reasoning_is_split_from_content(server: Server) -> None:
    think = server.token_id("<think>")
    reply = server.chat(
        messages=[{"role": "user", "content": "Think first"}], max_tokens=8, logit_bias={str(think): 100}
    )
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"]
    assert not message["content"]


@ENGINE_TIMEOUT
def test_forced_tool_call_is_parsed(server: Server) -> None:
    # Arguments are an enum and an integer: with the +100 bias, a free string argument also fills with
    # <tool_call> text and random bytes, and a cut UTF-8 sequence makes the server's parser answer 500.
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
                        "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    },
                    "required": ["city", "days"],
                },
            },
        }
    ]
    tool_call = server.token_id(TOOL_CALL_TOKEN)
    for seed in range(3):
        reply = server.chat(
            messages=[{"role": "user", "content": "What is the weather in Paris this week?"}],
            tools=tools,
            parallel_tool_calls=False,
            stop=["</tool_call>"],
            logit_bias={str(tool_call): 100},
            chat_template_kwargs={"enable_thinking": False},
            max_tokens=256,
            temperature=1.0,
            seed=seed,
        )
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        [call] = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        arguments = json.loads(call["function"]["arguments"])
        assert arguments["city"] in ("Paris", "Tokyo", "Lima")
        assert 1 <= arguments["days"] <= 7


@ENGINE_TIMEOUT
def test_corrupt_model_makes_llama_server_exit_nonzero(
    llama_server_binary: Path, model_path: Path, tmp_path: Path
) -> None:
    corrupt = write_corrupt_model(tmp_path / "corrupt.gguf", source=model_path)
    assert 0 < corrupt.stat().st_size < model_path.stat().st_size
    process, _ = launch(llama_server_binary, corrupt, tmp_path / "llama-server.log")
    try:
        exit_code = process.wait(timeout=READY_TIMEOUT_S)
    finally:
        stop(process)
    assert exit_code != 0
    assert "failed to load model" in (tmp_path / "llama-server.log").read_text()
