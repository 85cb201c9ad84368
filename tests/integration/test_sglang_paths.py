"""SGLang-only paths against the SGLang stand-in (tests/standins/sglang_server.py, SGLang's exact shapes):
native /generate with regex / EBNF / JSON schema, reasoning_effort, the cache report's null, its 400s and
401."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from conftest import sandserve_command
from standins.sglang_server import SGLangStandin

from sandserve.client.chat import ChatOptions, Delta, ask, ask_streaming, reasoning_plan
from sandserve.client.connect import connect
from sandserve.client.constrained import pick_constraint
from sandserve.client.usage import cache_stats
from sandserve.endpoint import Endpoint
from sandserve.errors import CapabilityError, EndpointUnavailableError, RequestRejectedError
from sandserve.tools.declaration import tool
from sandserve.tools.loop import run_tool_loop
from sandserve.tools.sandboxes import LocalToolSandbox
from sandserve.workloads.tour import get_weather

GPT_OSS = {"served_model_name": "gpt-oss-20b", "reasoning_parser": "gpt-oss", "tool_call_parser": "gpt-oss"}


@pytest.fixture
def sglang() -> Iterator[SGLangStandin]:
    with SGLangStandin(enable_cache_report=True, **GPT_OSS) as server:
        yield server


@pytest.fixture
def endpoint(sglang: SGLangStandin) -> Endpoint:
    return Endpoint(id="sg", url=sglang.url, model="gpt-oss-20b", engine="sglang")


def test_generate_uses_sglang_native_constraints(endpoint):
    color = endpoint.generate(
        "The best color for a terminal theme is", regex=" (red|green|blue|amber)", max_new_tokens=8
    )
    assert re.fullmatch(" (red|green|blue|amber)", color.text)
    assert color.finish_reason == "stop"
    assert color.raw["meta_info"]["finish_reason"]["type"] == "stop"  # SGLang's own shape, kept in raw

    date = endpoint.generate("Date: ", ebnf='root ::= "20" [0-9] [0-9] "-" ("0" [1-9] | "1" [0-2])')
    assert re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", date.text)

    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 9}},
        "required": ["n"],
    }
    assert 3 <= endpoint.generate("JSON: ", json_schema=schema).json()["n"] <= 9


def test_generate_reports_length_and_cache_from_meta_info(endpoint):
    cut = endpoint.generate("Say a lot", max_new_tokens=3)
    assert cut.finish_reason == "length" and cut.completion_tokens == 3
    prompt = "a shared prefix " * 30
    endpoint.generate(prompt + "one")
    again = endpoint.generate(prompt + "two")
    assert 0 < again.cached_tokens < again.prompt_tokens
    assert again.cache.cached_tokens == again.cached_tokens


def test_sglangs_grammar_400s_become_clear_errors(endpoint):
    bad_schema = {"type": "object", "minProperties": "x"}
    for kwargs, kind in (
        (dict(regex="(unclosed"), "regex"),
        (dict(ebnf="root ::= ("), "ebnf"),
        (dict(json_schema=bad_schema), "json"),
    ):
        with pytest.raises(RequestRejectedError, match=f"Failed to compile {kind} grammar") as caught:
            endpoint.generate("x", **kwargs)
        assert caught.value.status == 400
    with pytest.raises(RequestRejectedError, match="Failed to compile json grammar"):
        ask(endpoint, "x", ChatOptions(constraint=pick_constraint(json_schema=bad_schema)))


def test_a_bad_regex_in_a_stream_is_an_error_chunk_turned_into_a_clear_error(endpoint):
    with pytest.raises(RequestRejectedError, match="Failed to compile regex grammar"):
        list(ask_streaming(endpoint, "x", ChatOptions(constraint=pick_constraint(regex="(a"))))


def test_reasoning_effort_is_sent_as_is_and_changes_the_reasoning(endpoint):
    low = ask(endpoint, "Think.", ChatOptions(reasoning_effort="low"))
    high = ask(endpoint, "Think.", ChatOptions(reasoning_effort="high"))
    assert 0 < len(low.reasoning) < len(high.reasoning)
    assert low.notes == [] and low.content


def test_reasoning_effort_maps_per_model_family():
    qwen = Endpoint(id="q", url="http://x", model="qwen3-8b", engine="sglang")
    assert reasoning_plan(qwen, "low").params == {"chat_template_kwargs": {"enable_thinking": False}}
    assert reasoning_plan(qwen, "high").params == {"chat_template_kwargs": {"enable_thinking": True}}
    assert "on/off" in (reasoning_plan(qwen, "medium").note or "")
    with pytest.raises(CapabilityError, match=r"llama-3\.1-8b"):
        reasoning_plan(Endpoint(id="l", url="http://x", model="llama-3.1-8b", engine="sglang"), "low")
    with pytest.raises(CapabilityError, match="llamacpp"):
        reasoning_plan(Endpoint(id="g", url="http://x", model="my-model", engine="llamacpp"), "low")
    unknown = reasoning_plan(Endpoint(id="u", url="http://x", model="my-model", engine="sglang"), "low")
    assert unknown.params == {"reasoning_effort": "low"} and unknown.note


def test_streaming_keeps_reasoning_and_answer_apart(endpoint):
    events = list(ask_streaming(endpoint, "Write a haiku.", ChatOptions(reasoning_effort="low")))
    channels = [event.channel for event in events if isinstance(event, Delta)]
    assert channels.index("content") > channels.index("reasoning")
    assert "reasoning" not in channels[channels.index("content") :]
    assert events[-1].reasoning and events[-1].content


def test_cache_report_null_counts_as_zero():
    with SGLangStandin(enable_cache_report=False, **GPT_OSS) as server:
        endpoint = Endpoint(id="sg", url=server.url, model="gpt-oss-20b", engine="sglang")
        messages = [{"role": "user", "content": "same prompt " * 20}]
        with endpoint.openai() as client:
            for _ in range(2):
                response = client.chat.completions.create(
                    model=endpoint.model, messages=messages, max_tokens=8
                )
                assert response.usage.prompt_tokens_details is None  # SGLang without --enable-cache-report
                assert cache_stats(response).cached_tokens == 0


def test_cache_report_on_a_cold_then_warm_prefix(endpoint, closing):
    client = closing(endpoint.openai())
    messages = [{"role": "user", "content": "shared context " * 40 + "Summarize."}]
    cold = client.chat.completions.create(model=endpoint.model, messages=messages, max_tokens=8)
    assert cold.usage.prompt_tokens_details is None  # N == 0 is reported as null, not 0
    warm = client.chat.completions.create(model=endpoint.model, messages=messages, max_tokens=8)
    stats = endpoint.cache_stats(warm)
    assert stats.cached_tokens == stats.prompt_tokens - 1


def test_tool_choice_forces_the_call_on_sglang(endpoint):
    with LocalToolSandbox() as sandbox:
        result = run_tool_loop(
            endpoint,
            [{"role": "user", "content": "Hello there."}],
            [tool(get_weather)],
            sandbox,
            force_tool="get_weather",
        )
    assert [call.name for call in result.calls] == ["get_weather"]
    assert result.calls[0].ok and result.rounds == 2 and result.answer


def test_api_key_mode_and_a_wrong_key():
    with SGLangStandin(api_key="sk-right", **GPT_OSS) as server:
        good = Endpoint(
            id="k", url=server.url, model="gpt-oss-20b", engine="sglang", auth="key", api_key="sk-right"
        )
        assert ask(good, "Hi").content
        assert good.generate("Hi").text
        bad = Endpoint(
            id="k", url=server.url, model="gpt-oss-20b", engine="sglang", auth="key", api_key="sk-wrong"
        )
        with pytest.raises(EndpointUnavailableError, match="401") as caught:
            ask(bad, "Hi")
        assert "sandserve status" in str(caught.value)
        with pytest.raises(EndpointUnavailableError, match="Unauthorized"):
            bad.generate("Hi")


def test_connect_from_the_environment_recognises_sglang(sglang, monkeypatch):
    monkeypatch.setenv("ENDPOINT", sglang.url + "/v1")
    endpoint = connect()
    assert (endpoint.engine, endpoint.model, endpoint.url) == ("sglang", "gpt-oss-20b", sglang.url)


def test_chat_command_on_sglang_shows_reasoning_apart(sglang):
    env = {**os.environ, "ENDPOINT": sglang.url}
    result = subprocess.run(
        [
            *sandserve_command(),
            "chat",
            "Write a haiku.",
            "--reasoning-effort",
            "high",
            "--stream",
            "--verbose",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "reasoning:" in result.stderr and "answer:" in result.stderr
    answer = result.stdout.strip()
    assert answer and answer not in result.stderr  # the answer alone on stdout, the reasoning on stderr
    assert "prompt tokens from cache" in result.stderr

    bad = subprocess.run(
        [*sandserve_command(), "chat", "x", "--regex", "(a"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert bad.returncode != 0 and "Failed to compile regex grammar" in bad.stderr
