"""The SGLang stand-in, run as `python -m sglang.launch_server`, read by the engine and driven by the openai
SDK."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from polling import poll_until
from standins.sglang_server import FAIL_ENV, READY_FILE_ENV, SGLangStandin

from sandserve.engines.base import diagnose, phases_in
from sandserve.engines.sglang import SGLANG, server_info_summary
from sandserve.providers.local import free_port
from sandserve.workloads.tour import HAIKU_SCHEMA

FAKE_SGLANG = Path(__file__).parent.parent / "standins" / "fake_sglang"
API_KEY = "sk-standin-test"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class FakeSGLang:
    """`python -m sglang.launch_server ...` on the fake package, in its own process group, output
    collected."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "sglang.launch_server", "--host", "127.0.0.1", "--port", str(self.port)]
        environ = {**os.environ, "PYTHONPATH": str(FAKE_SGLANG), "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0"}
        self.proc = subprocess.Popen(
            [*argv, *flags],
            env={**environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at the end of the output, when the server has gone
            for line in self.proc.stdout:
                self._chunks.append(line)

    @property
    def output(self) -> str:
        return "".join(self._chunks)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, text: str, timeout: float = 30) -> None:
        poll_until(
            lambda: text in self.output or self.proc.poll() is not None, what=repr(text), timeout=timeout
        )
        assert text in self.output, self.output

    def wait_exit(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def _status(url: str, **kwargs: object) -> int | None:
    try:
        return httpx.get(url, timeout=5, **kwargs).status_code  # type: ignore[arg-type]
    except httpx.TransportError:
        return None  # not listening yet


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSGLang]:
    fake = FakeSGLang(
        "--model-path",
        "openai/gpt-oss-20b",
        "--served-model-name",
        "gpt-oss-20b",
        "--api-key",
        API_KEY,
        "--reasoning-parser",
        "gpt-oss",
        "--tool-call-parser",
        "gpt-oss",
        "--enable-cache-report",
        "--enable-metrics",
        "--tp",
        "1",
        "--trust-remote-code",  # flags the stand-in ignores, as it must
        env={"SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": "0"},
    )
    try:
        fake.wait_for("The server is fired up and ready to roll!")
        yield fake
    finally:
        fake.kill()


@pytest.fixture(scope="module")
def client(server: FakeSGLang) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


# --- boot, readiness, failures ------------------------------------------------------------------------------


def test_boot_log_phases_kv_pool_and_readiness(tmp_path: Path) -> None:
    ready_file = tmp_path / "warm"
    fake = FakeSGLang(
        "--model-path",
        "openai/gpt-oss-20b",
        "--reasoning-parser",
        "gpt-oss",
        env={READY_FILE_ENV: str(ready_file), "SANDSERVE_FAKE_SGLANG_KV_TOKENS": "1187328"},
    )
    try:
        fake.wait_for("Uvicorn running on")
        assert phases_in(SGLANG, fake.output) == [
            "process started",
            "weights downloaded",
            "weights loaded",
            "kv cache allocated",
            "kernels compiled",
            "cuda graphs captured",
        ]
        assert SGLANG.kv_pool_tokens(fake.output) == 1_187_328
        poll_until(
            lambda: _status(f"{fake.url}/health_generate") is not None, what="an answer from the server"
        )

        assert _status(f"{fake.url}/health_generate") == 503  # warm-up held: not ready
        assert _status(f"{fake.url}/health") == 503
        assert _status(f"{fake.url}/v1/models") == 200  # why /v1/models is no readiness probe

        ready_file.touch()
        fake.wait_for("The server is fired up and ready to roll!")
        response = httpx.get(f"{fake.url}/health_generate", timeout=5)
        assert (response.status_code, response.content) == (200, b"")
        assert phases_in(SGLANG, fake.output)[-1] == "server ready"
        assert diagnose(SGLANG, fake.output) is None
    finally:
        fake.kill()


@pytest.mark.parametrize(
    ("mode", "summary_has"),
    [
        ("kv_oom", "KV cache pool"),
        ("cuda_oom", "CUDA out of memory"),
        ("host_oom", "host RAM"),
        ("context", "--context-length"),
        ("gated", "gated"),
        ("not_found", "not found"),
    ],
)
def test_failure_mode_exits_and_is_diagnosed(mode: str, summary_has: str) -> None:
    fake = FakeSGLang("--model-path", "meta-llama/Llama-3.1-8B-Instruct", env={FAIL_ENV: mode})
    try:
        code = fake.wait_exit()
    finally:
        fake.kill()
    assert code != 0
    diagnosis = diagnose(SGLANG, fake.output)
    assert diagnosis is not None, fake.output
    assert summary_has in diagnosis.summary
    if mode in ("kv_oom", "cuda_oom"):
        # The parent kills its own tree: SIGKILL, the same exit a host OOM gives; only the log tells them
        # apart.
        assert code == -signal.SIGKILL
        assert "Scheduler hit an exception:" in fake.output
        assert fake.output.rstrip().endswith(
            "Received sigquit from a child process. It usually means the child failed."
        )


def test_too_long_context_length_fails_like_sglang() -> None:
    fake = FakeSGLang("--model-path", "openai/gpt-oss-20b", "--context-length", "200000")
    try:
        assert fake.wait_exit() != 0
    finally:
        fake.kill()
    assert "--context-length" in diagnose(SGLANG, fake.output).summary  # type: ignore[union-attr]


# --- the API ------------------------------------------------------------------------------------------------


def test_api_key_guards_everything_but_health(server: FakeSGLang) -> None:
    models = f"{server.url}/v1/models"
    unauthorized = httpx.get(models, timeout=5)
    assert (unauthorized.status_code, unauthorized.json()) == (401, {"error": "Unauthorized"})
    assert _status(models, headers={"Authorization": "Bearer wrong"}) == 401
    assert _status(models, headers=_auth()) == 200
    assert _status(f"{server.url}/health") == 200
    assert _status(f"{server.url}/health_generate") == 200
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError),
    ):
        wrong.models.list()


def test_models_server_info_and_metrics(server: FakeSGLang, client: openai.OpenAI) -> None:
    (model,) = client.models.list().data
    assert (model.id, model.owned_by) == ("gpt-oss-20b", "sglang")

    info = httpx.get(f"{server.url}/server_info", headers=_auth(), timeout=5).json()
    assert info["api_key"] == API_KEY  # SGLang returns it in plain text...
    summary = server_info_summary(info)
    assert API_KEY not in json.dumps(summary)  # ...the summary never does
    assert summary["max_total_num_tokens"] == SGLANG.kv_pool_tokens(server.output)
    assert summary["version"] == "0.5.12.post1"
    assert (
        httpx.get(f"{server.url}/get_server_info", headers=_auth(), timeout=5).json()["version"]
        == "0.5.12.post1"
    )
    assert (
        httpx.get(f"{server.url}/model_info", headers=_auth(), timeout=5).json()["model_path"]
        == "openai/gpt-oss-20b"
    )

    client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "Count me."}])
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert re.search(r'^sglang:num_requests_total\{model_name="gpt-oss-20b"\} [1-9]', metrics, re.MULTILINE)
    assert "sglang:prompt_tokens_total" in metrics


def test_reasoning_is_separate_and_follows_the_effort(client: openai.OpenAI) -> None:
    def ask(effort: str) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model="gpt-oss-20b",
            reasoning_effort=effort,
            max_tokens=8192,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "Write a haiku about thinking before speaking."}],
        )

    high, low = ask("high"), ask("low")
    message = high.choices[0].message
    reasoning = message.reasoning_content  # type: ignore[attr-defined]
    assert reasoning and message.content and reasoning not in message.content
    assert len(reasoning) > len(low.choices[0].message.reasoning_content)  # type: ignore[attr-defined]
    assert high.usage is not None and high.usage.reasoning_tokens > 0  # type: ignore[attr-defined]


def test_streaming_sends_reasoning_first_then_content_then_usage(
    server: FakeSGLang, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model="gpt-oss-20b",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write ten haikus about tokens arriving one at a time."}],
    )
    kinds, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            if getattr(choice.delta, "reasoning_content", None):
                kinds.append("reasoning")
            if choice.delta.content:
                kinds.append("content")
    assert kinds[0] == "reasoning" and kinds[-1] == "content"
    assert kinds == sorted(kinds, key=lambda kind: kind != "reasoning")  # no reasoning after content
    assert finish == "stop" and usage is not None and usage.completion_tokens > 0

    body = {"model": "x", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    raw = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=_auth(), timeout=5).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_prefix_cache_reports_null_then_hits(client: openai.OpenAI) -> None:
    context = (
        "CACHE-PROBE The Daytona platform provides isolated sandboxes for AI agents to safely execute code. "
        * 60
    )

    def ask() -> openai.types.CompletionUsage:
        response = client.chat.completions.create(
            model="gpt-oss-20b",
            max_tokens=32,
            messages=[{"role": "user", "content": context + "Summarize the above in one sentence."}],
        )
        assert response.usage is not None
        return response.usage

    first, second = ask(), ask()
    assert first.prompt_tokens_details is None  # cold cache: null, not 0
    assert second.prompt_tokens_details is not None
    assert second.prompt_tokens_details.cached_tokens == second.prompt_tokens - 1


def test_json_schema_reply_is_a_valid_instance(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="gpt-oss-20b",
        max_tokens=4096,
        messages=[
            {
                "role": "user",
                "content": "Compose a haiku about GPU sandboxes, as JSON with title, lines, and season.",
            }
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "haiku", "schema": HAIKU_SCHEMA}},
    )
    message = response.choices[0].message
    jsonschema.validate(json.loads(message.content or ""), HAIKU_SCHEMA)
    assert message.reasoning_content  # type: ignore[attr-defined]  # the grammar constrains only the answer


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[dict] = [{"role": "user", "content": "Write a haiku about the current weather in Lisbon."}]
    response = client.chat.completions.create(model="gpt-oss-20b", messages=messages, tools=[WEATHER_TOOL])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather"
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert arguments == {"city": "Lisbon"}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18°C and sunny in Lisbon"})
    final = client.chat.completions.create(model="gpt-oss-20b", messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.tool_calls is None
    assert "18°C and sunny in Lisbon" in (final.choices[0].message.content or "")

    required = client.chat.completions.create(
        model="gpt-oss-20b",
        messages=[{"role": "user", "content": "Hello there."}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    assert required.choices[0].message.tool_calls
    plain = client.chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "Hello there."}], tools=[WEATHER_TOOL]
    )
    assert plain.choices[0].message.tool_calls is None


def test_generate_regex_ebnf_and_json_schema_hold(server: FakeSGLang) -> None:
    def generate(**params: object) -> dict:
        body = {
            "text": "The best color for a terminal theme is",
            "sampling_params": {"max_new_tokens": 64, **params},
        }
        response = httpx.post(f"{server.url}/generate", json=body, headers=_auth(), timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    color = generate(regex=" (red|green|blue|amber)")
    assert re.fullmatch(" (red|green|blue|amber)", color["text"])
    meta = color["meta_info"]
    assert meta["finish_reason"]["type"] == "stop"
    assert meta["prompt_tokens"] > 0 and meta["completion_tokens"] == len(color["output_ids"]) == 1
    assert {"id", "cached_tokens", "e2e_latency"} <= meta.keys()

    assert re.fullmatch(r"[A-Z][a-z]{2,5}-\d{3}", generate(regex=r"[A-Z][a-z]{2,5}-\d{3}")["text"])
    answer = generate(ebnf='root ::= "The answer is " digit+ "." \ndigit ::= [0-9]')["text"]
    assert re.fullmatch(r"The answer is \d+\.", answer)
    jsonschema.validate(json.loads(generate(json_schema=json.dumps(HAIKU_SCHEMA))["text"]), HAIKU_SCHEMA)

    long = generate(max_new_tokens=3)
    assert long["meta_info"]["finish_reason"] == {"type": "length", "length": 3}


def test_bad_constraints_and_requests_are_400(server: FakeSGLang, client: openai.OpenAI) -> None:
    for params, kind in (
        ({"regex": "("}, "regex"),
        ({"ebnf": 'root ::= "unclosed'}, "ebnf"),
        ({"json_schema": "{not json"}, "json"),
    ):
        body = {"text": "Hi", "sampling_params": params}
        response = httpx.post(f"{server.url}/generate", json=body, headers=_auth(), timeout=5)
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith(f"Failed to compile {kind} grammar:")

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], extra_body={"regex": "("}
        )
    assert caught.value.body is not None and "Failed to compile regex grammar" in str(caught.value)

    missing = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "x"}, headers=_auth(), timeout=5)
    assert missing.status_code == 400
    assert {"object": "error", "code": 400}.items() <= missing.json().items()
    empty = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": []}, headers=_auth(), timeout=5)
    assert empty.json() == {
        "object": "error",
        "message": "Messages cannot be empty.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


# --- in-process ---------------------------------------------------------------------------------------------


def test_in_process_standin_holds_warmup_until_told() -> None:
    with (
        SGLangStandin(hold_warmup=True, served_model_name="qwen3-8b", reasoning_parser="qwen3") as standin,
        openai.OpenAI(base_url=f"{standin.url}/v1", api_key="EMPTY", max_retries=0) as client,
    ):
        assert standin.url.startswith("http://127.0.0.1:")
        assert _status(f"{standin.url}/health_generate") == 503
        standin.finish_warmup()
        poll_until(lambda: _status(f"{standin.url}/health_generate") == 200, what="ready after the warm-up")
        thinking_off = client.chat.completions.create(
            model="qwen3-8b",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        assert thinking_off.choices[0].message.reasoning_content is None  # type: ignore[attr-defined]
        repeat = [{"role": "user", "content": "Same words twice"}]
        client.chat.completions.create(model="qwen3-8b", messages=repeat)  # type: ignore[arg-type]
        second = client.chat.completions.create(model="qwen3-8b", messages=repeat)  # type: ignore[arg-type]
        assert (
            second.usage is not None and second.usage.prompt_tokens_details is None
        )  # no --enable-cache-report


def test_at_most_max_running_requests_generate_at_once_and_the_rest_wait() -> None:
    with (
        SGLangStandin(max_running_requests=1, decode_seconds=1.0, served_model_name="m") as standin,
        openai.OpenAI(base_url=f"{standin.url}/v1", api_key="EMPTY", max_retries=0) as client,
    ):
        replies: list[object] = []

        def ask() -> None:
            replies.append(
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
            )

        askers = [threading.Thread(target=ask) for _ in range(3)]
        for asker in askers:
            asker.start()

        def aggregate() -> dict:
            return httpx.get(f"{standin.url}/v1/loads", timeout=5).json()["aggregate"]

        poll_until(lambda: aggregate()["total_reqs"] == 3, what="three requests in the loads")
        seen = aggregate()  # each request takes a second: all three are still there
        assert (seen["total_reqs"], seen["total_running_reqs"], seen["total_waiting_reqs"]) == (3, 1, 2)
        for asker in askers:
            asker.join(timeout=30)
        assert len(replies) == 3 and aggregate()["total_reqs"] == 0
