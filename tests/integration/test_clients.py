"""Clients against the real local engine (llama-server serving the tiny random model): the OpenAI SDK,
LiteLLM, the library's chat and generate, and the `sandserve chat` command.

The tiny model never thinks by itself: to see reasoning and answer streamed apart, a GBNF grammar makes it
open
and close a <think> block first (a test-only device; the server's reasoning parser does the splitting)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from conftest import as_typed, run_cli

from sandserve.client.chat import ChatOptions, Delta, ask, ask_streaming
from sandserve.client.constrained import chat_constraint_params, pick_constraint
from sandserve.client.usage import cache_stats
from sandserve.errors import (
    CapabilityError,
    EndpointUnavailableError,
    InvalidConstraintError,
    RequestRejectedError,
)
from sandserve.tools.declaration import tool, tool_specs
from sandserve.tools.loop import forced_request
from sandserve.tools.sandboxes import LocalToolSandbox
from sandserve.workloads.tour import get_weather

pytestmark = pytest.mark.usefixtures("llama_server", "tiny_model")

THINK_THEN_ANSWER = 'root ::= "<think>" [a-z ]{8,30} "</think>" [a-z ]{8,30}'
SCHEMA = {
    "type": "object",
    "properties": {
        "author": {"type": "string", "enum": ["Austen", "Bronte", "Dickens", "Doyle"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        # Patterns, not maxLength: the random model's byte-level tokens can leave broken UTF-8 (U+FFFD, which
        # Python counts per byte) inside a string llama.cpp's grammar counted as shorter.
        "quote": {"type": "string", "pattern": "^[A-Za-z0-9 ,.;:!?'-]{1,40}$"},
        "tags": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z]{1,12}$"},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["author", "confidence", "quote", "tags"],
}
LONG_PROMPT = "The Daytona platform provides isolated sandboxes for AI agents to safely execute code. " * 20


# --- streaming: reasoning and answer apart ------------------------------------------------------------------


def test_openai_sdk_streams_reasoning_and_content_in_separate_fields(local_endpoint):
    reasoning, content = [], []
    with local_endpoint.openai() as client:
        stream = client.chat.completions.create(
            model=local_endpoint.model,
            messages=[{"role": "user", "content": "Think, then answer."}],
            max_tokens=80,
            stream=True,
            extra_body={"grammar": THINK_THEN_ANSWER},
        )
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            assert not (getattr(delta, "reasoning_content", None) and delta.content), "one channel per delta"
            reasoning.append(getattr(delta, "reasoning_content", None) or "")
            content.append(delta.content or "")
    assert re.fullmatch(r"[a-z ]{8,30}", "".join(reasoning))
    assert re.fullmatch(r"[a-z ]{8,30}", "".join(content))
    assert "<think>" not in "".join(content)


def test_library_stream_yields_reasoning_then_answer_deltas(local_endpoint):
    events = list(
        ask_streaming(
            local_endpoint,
            "Think, then answer.",
            ChatOptions(max_tokens=80, extra_body={"grammar": THINK_THEN_ANSWER}),
        )
    )
    deltas, reply = events[:-1], events[-1]
    channels = [d.channel for d in deltas if isinstance(d, Delta)]
    assert channels == sorted(channels, key=["reasoning", "content"].index), "all reasoning comes first"
    assert {"reasoning", "content"} <= set(channels)
    assert reply.reasoning == "".join(d.text for d in deltas if d.channel == "reasoning")
    assert reply.content == "".join(d.text for d in deltas if d.channel == "content")
    assert reply.cache.prompt_tokens > 0


def test_litellm_streams_reasoning_and_content_apart(local_endpoint, litellm):
    reasoning, content = "", ""
    for chunk in litellm.completion(
        **local_endpoint.litellm_kwargs(),
        max_tokens=80,
        stream=True,
        messages=[{"role": "user", "content": "Think, then answer."}],
        extra_body={"grammar": THINK_THEN_ANSWER},
    ):
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
    assert re.fullmatch(r"[a-z ]{8,30}", reasoning)
    assert re.fullmatch(r"[a-z ]{8,30}", content)


# --- structured output --------------------------------------------------------------------------------------


def test_json_schema_output_always_parses_and_validates(local_endpoint):
    params = chat_constraint_params(local_endpoint, pick_constraint(json_schema=SCHEMA))
    with local_endpoint.openai() as client:
        for attempt in range(4):
            response = client.chat.completions.create(
                model=local_endpoint.model,
                max_tokens=300,
                temperature=1.0,
                messages=[{"role": "user", "content": f"Who wrote this? (attempt {attempt})"}],
                **params,
            )
            assert response.choices[0].finish_reason == "stop"
            jsonschema.validate(json.loads(response.choices[0].message.content), SCHEMA)


def test_json_schema_through_the_library_and_litellm(local_endpoint, litellm):
    options = ChatOptions(max_tokens=300, constraint=pick_constraint(json_schema=SCHEMA))
    reply = ask(local_endpoint, "Who wrote this?", options)
    jsonschema.validate(reply.json(), SCHEMA)

    params = chat_constraint_params(local_endpoint, pick_constraint(json_schema=SCHEMA))
    response = litellm.completion(
        **local_endpoint.litellm_kwargs(),
        max_tokens=300,
        messages=[{"role": "user", "content": "Who wrote this?"}],
        **params,
    )
    jsonschema.validate(json.loads(response.choices[0].message.content), SCHEMA)


def test_chat_regex_on_llamacpp_is_enforced_through_a_grammar(local_endpoint):
    options = ChatOptions(max_tokens=30, constraint=pick_constraint(regex=r"[A-Z]{2}-\d{3}"))
    reply = ask(local_endpoint, "A code?", options)
    assert re.fullmatch(r"[A-Z]{2}-\d{3}", reply.content)


# --- generate: SGLang's /generate, mapped onto llama.cpp ----------------------------------------------------


def test_generate_maps_regex_ebnf_and_schema_onto_llamacpp(local_endpoint):
    color = local_endpoint.generate("The best color is", regex=" (red|green|blue|amber)", max_new_tokens=8)
    assert color.text in (" red", " green", " blue", " amber")
    assert color.finish_reason == "stop"

    date = local_endpoint.generate("Today is ", ebnf='root ::= "20" [0-9] [0-9] "-" ("0" [1-9] | "1" [0-2])')
    assert re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", date.text)

    answer = local_endpoint.generate("JSON: ", json_schema=json.dumps(SCHEMA), max_new_tokens=300)
    jsonschema.validate(answer.json(), SCHEMA)


def test_generate_refuses_what_llamacpp_cannot_enforce(local_endpoint):
    with pytest.raises(CapabilityError, match="lookahead") as caught:
        local_endpoint.generate("x", regex=r"\w+(?=!)")
    assert "SGLang" in (caught.value.hint or "")
    with pytest.raises(CapabilityError, match="backreference"):
        local_endpoint.generate("x", regex=r"(a)\1")
    with pytest.raises(InvalidConstraintError, match="regex"):
        local_endpoint.generate("x", regex="(unclosed")


def test_bad_grammar_and_schema_are_the_servers_400(local_endpoint):
    with pytest.raises(RequestRejectedError, match="failed to parse grammar") as caught:
        local_endpoint.generate("x", ebnf="root ::= (")
    assert caught.value.status == 400
    with pytest.raises(RequestRejectedError, match="unrecognized type") as caught:
        ask(local_endpoint, "x", ChatOptions(constraint=pick_constraint(json_schema={"type": "bogus"})))
    assert caught.value.status == 400


# --- tools --------------------------------------------------------------------------------------------------


def test_litellm_carries_a_forced_tool_call_through_the_loop(local_endpoint, litellm):
    weather = tool(get_weather)
    messages = [{"role": "user", "content": "Write a haiku about the current weather in Lisbon."}]
    params = {"messages": messages, "tools": tool_specs([weather]), "max_tokens": 64}
    forced = forced_request(local_endpoint, params, weather)
    first = litellm.completion(**local_endpoint.litellm_kwargs(), **forced)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    with LocalToolSandbox() as sandbox:
        outcome = sandbox.run(weather, json.loads(call.function.arguments))
    assert outcome.ok and re.search(r"-?\d+°C and (sunny|cloudy|rainy|foggy|windy) in ", outcome.content)
    messages += [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": outcome.content},
    ]
    final = litellm.completion(**local_endpoint.litellm_kwargs(), messages=messages, max_tokens=16)
    assert final.choices[0].message.content


# --- cache visibility ---------------------------------------------------------------------------------------


def test_a_repeated_prompt_reports_cached_tokens_in_every_client(local_endpoint, litellm):
    messages = [{"role": "user", "content": LONG_PROMPT + "Summarize."}]
    with local_endpoint.openai() as client:
        client.chat.completions.create(model=local_endpoint.model, messages=messages, max_tokens=4)
        response = client.chat.completions.create(model=local_endpoint.model, messages=messages, max_tokens=4)
    again = cache_stats(response)
    assert 0 < again.cached_tokens < again.prompt_tokens

    response = litellm.completion(**local_endpoint.litellm_kwargs(), messages=messages, max_tokens=4)
    assert local_endpoint.cache_stats(response).cached_tokens > 0

    local_endpoint.generate(LONG_PROMPT, max_new_tokens=2)
    assert local_endpoint.generate(LONG_PROMPT, max_new_tokens=2).cached_tokens > 0


def test_cache_stats_treats_null_details_as_zero():
    assert cache_stats({"usage": {"prompt_tokens": 12, "prompt_tokens_details": None}}).cached_tokens == 0
    assert cache_stats({"usage": {"prompt_tokens": 12}}).prompt_tokens == 12
    assert cache_stats({"meta_info": {"prompt_tokens": 9, "cached_tokens": None}}).cached_tokens == 0
    stats = cache_stats({"usage": {"prompt_tokens": 976, "prompt_tokens_details": {"cached_tokens": 975}}})
    assert (stats.cached_tokens, stats.prompt_tokens) == (975, 976)
    assert str(stats) == "975/976 prompt tokens from cache"


# --- the chat command ---------------------------------------------------------------------------------------


def test_chat_command_constrains_and_reports_the_cache(local_endpoint, tmp_path: Path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    result = run_cli("chat", "Who wrote it?", "--schema", str(schema_file), "--max-tokens", "300", "-v")
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), SCHEMA)
    assert re.search(r"\d+/\d+ prompt tokens from cache", result.stderr)
    assert "gibberish" in result.stderr  # the tiny model says what it is

    streamed = run_cli(
        "chat", "A colour?", "--regex", " (red|green|blue)", "--stream", "-e", local_endpoint.id
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip() in ("red", "green", "blue")

    low = run_cli("chat", "Hi", "--reasoning-effort", "low", "--max-tokens", "8", "-v")
    assert low.returncode == 0, low.stderr
    assert "enable_thinking=false" in low.stderr  # the mapping is said, not hidden


def test_chat_command_shows_the_servers_400_and_fails(local_endpoint, tmp_path: Path):
    grammar = tmp_path / "bad.gbnf"
    grammar.write_text("root ::= (")
    result = run_cli("chat", "Hi", "--ebnf", str(grammar))
    assert result.returncode != 0
    assert "rejected the request (400)" in result.stderr and "grammar" in result.stderr
    assert "Traceback" not in result.stderr

    schema = tmp_path / "bad.json"
    schema.write_text('{"type": "bogus"}')
    result = run_cli("chat", "Hi", "--schema", str(schema))
    assert result.returncode != 0 and "unrecognized type bogus" in result.stderr

    result = run_cli("chat", "Hi", "--regex", "(?<=a)b")
    assert result.returncode != 0 and "SGLang" in result.stderr


def test_chat_against_an_endpoint_that_is_down_names_sandserve_status(tmp_path: Path):
    from socket import socket

    with socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli("chat", "Hi", env={"ENDPOINT": f"http://127.0.0.1:{port}", "MODEL": "m"})
    assert result.returncode != 0
    assert "sandserve status" in as_typed(result.stderr) and "Traceback" not in result.stderr

    from sandserve.endpoint import Endpoint

    down = Endpoint(id="gone", url=f"http://127.0.0.1:{port}", model="m", engine="llamacpp")
    with pytest.raises(EndpointUnavailableError, match="not usable"):
        ask(down, "Hi")
    with pytest.raises(EndpointUnavailableError):
        down.generate("Hi")
