"""The agent APIs (Anthropic Messages and OpenAI Responses) on every endpoint kind, with the real
``anthropic`` and ``openai`` SDKs: the SGLang stand-in (checked by SGLang 0.5.12.post1's own protocol models
from its wheel), a Daytona endpoint serving it, a local endpoint (llama-server behind the adapter) and a fleet
behind smg, in each auth mode that applies.

What SGLang 0.5.12.post1 itself refuses is asserted as refused on its endpoints (a function tool on
/v1/responses), and what it ignores as ignored (a Responses JSON schema): the stand-in answers as SGLang's
models make it, and sandserve does not pretend otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import anthropic
import httpx
import jsonschema
import openai
import pytest
from conftest import run_cli, sglang_daytona_standin
from standins.daytona_api import DaytonaStandin
from standins.sglang_server import SGLangStandin

from sandserve.endpoint import Endpoint
from sandserve.fleet import fleet_up
from sandserve.observe.bench import BenchConfig, LoadPlan, run_bench_sync
from sandserve.observe.datasets import PromptSource, random_prompts
from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import free_port
from sandserve.serve import lifecycle
from sandserve.serve.resolve import resolve_spec

GPT_OSS = {"served_model_name": "gpt-oss-20b", "reasoning_parser": "gpt-oss", "tool_call_parser": "gpt-oss"}
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Lisbon"]}},
        "required": ["city"],
    },
}
PICK_SCHEMA = {
    "type": "object",
    "properties": {
        "colour": {"type": "string", "enum": ["red", "green"]},
        "n": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["colour", "n"],
    "additionalProperties": False,
}
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {**WEATHER_TOOL["input_schema"], "additionalProperties": False},
}


#: Room for gpt-oss's reasoning (32 words at medium effort) and an answer after it.
ROUND_TOKENS = 64
# Greedy: the random tiny model, sampling, can end on EOS at its first token (an empty answer) about once in
# 70 requests; its greedy answers to these prompts are the same every run. (anthropic 2.x's create takes no
# `temperature` argument; Anthropic's API and llama-server still read it from the body.)
GREEDY = {"temperature": 0.0}


def anthropic_client(endpoint: Endpoint) -> anthropic.Anthropic:
    return endpoint.anthropic(max_retries=0, timeout=60)


def messages_round(endpoint: Endpoint) -> None:
    """Create and stream through the Anthropic SDK; both come back as Anthropic messages."""
    with anthropic_client(endpoint) as client:
        message = client.messages.create(
            model=endpoint.model, max_tokens=ROUND_TOKENS, messages=HELLO, extra_body=GREEDY
        )
        assert message.type == "message" and message.role == "assistant"
        assert message.content[0].type == "text" and message.content[0].text
        assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0
        with client.messages.stream(
            model=endpoint.model, max_tokens=ROUND_TOKENS, messages=HELLO, extra_body=GREEDY
        ) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert streamed and final.content[0].text == streamed
        assert client.messages.count_tokens(model=endpoint.model, messages=HELLO).input_tokens > 0


def responses_round(endpoint: Endpoint) -> openai.OpenAI:
    """Create and stream through the OpenAI SDK's Responses API; the client it used (to close)."""
    client = endpoint.openai(max_retries=0, timeout=60)
    response = client.responses.create(
        model=endpoint.model, input="Hello", max_output_tokens=ROUND_TOKENS, temperature=0.0
    )
    assert response.status == "completed" and response.output_text
    events = list(
        client.responses.create(
            model=endpoint.model,
            input="Hello",
            max_output_tokens=ROUND_TOKENS,
            temperature=0.0,
            stream=True,
        )
    )
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output_text
    return client


# --- the SGLang stand-in, checked by SGLang's own models ---------------------------------------------------


@pytest.fixture
def sglang() -> Iterator[SGLangStandin]:
    with SGLangStandin(enable_cache_report=True, **GPT_OSS) as server:
        yield server


@pytest.fixture
def sglang_endpoint(sglang: SGLangStandin) -> Endpoint:
    return Endpoint(id="sg", url=sglang.url, model="gpt-oss-20b", engine="sglang", auth="public")


def test_sglang_messages_create_stream_and_a_tool_call(sglang_endpoint, closing):
    messages_round(sglang_endpoint)
    client = closing(anthropic_client(sglang_endpoint))
    called = client.messages.create(
        model=sglang_endpoint.model,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    assert called.stop_reason == "tool_use"
    use = next(block for block in called.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input["city"] in ("Paris", "Lisbon")
    answered = client.messages.create(
        model=sglang_endpoint.model,
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [block.model_dump() for block in called.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}]},
        ],
    )
    assert answered.stop_reason == "end_turn" and answered.content[0].text.startswith("Sunny")
    with client.messages.stream(
        model=sglang_endpoint.model,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Lisbon?"}],
    ) as stream:
        final = stream.get_final_message()
    streamed_use = next(block for block in final.content if block.type == "tool_use")
    assert final.stop_reason == "tool_use" and streamed_use.input["city"] in ("Paris", "Lisbon")


def test_sglang_refuses_what_its_own_models_refuse(sglang_endpoint, closing):
    client = closing(anthropic_client(sglang_endpoint))
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gpt-oss-20b", max_tokens=0, messages=HELLO)
    # AnthropicMessagesRequest.validate_max_tokens, through FastAPI's body validation: SGLang's legacy
    # error shape (not Anthropic's: its handler special-cases only /v1/responses).
    body = refused.value.body
    assert isinstance(body, dict) and body["object"] == "error" and body["type"] == "Bad Request"
    assert "max_tokens must be positive" in body["message"] and "('body', 'max_tokens')" in body["message"]

    chat = httpx.post(
        f"{sglang_endpoint.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "robot", "content": "Hi"}]},
        timeout=10,
    )
    assert (
        chat.status_code == 400
        and "('body', 'messages', 0, 'ChatCompletionMessageGenericParam', 'role')" in chat.json()["message"]
    )

    # ResponsesRequest.tools takes web_search_preview / code_interpreter only, and SGLang builds the model
    # inside its route: a function tool is a plain 500.
    with pytest.raises(openai.InternalServerError):
        closing(sglang_endpoint.openai(max_retries=0)).responses.create(
            model="gpt-oss-20b", input="Weather in Paris?", tools=[RESPONSES_TOOL]
        )


def test_sglang_responses_create_stream_retrieve_and_its_json_schema_ignored(sglang_endpoint, closing):
    client = closing(responses_round(sglang_endpoint))
    first = client.responses.create(model="gpt-oss-20b", input="Hello", max_output_tokens=64)
    kinds = [item.type for item in first.output]
    assert kinds == ["reasoning", "message"]  # gpt-oss's reasoning parser splits it
    assert client.responses.retrieve(first.id).id == first.id
    follow = client.responses.create(model="gpt-oss-20b", input="And then?", previous_response_id=first.id)
    assert follow.status == "completed"
    # `text` is no field of SGLang 0.5.12.post1's ResponsesRequest: the schema is accepted and not enforced.
    free = client.responses.create(
        model="gpt-oss-20b",
        input="Pick",
        text={"format": {"type": "json_schema", "name": "pick", "schema": PICK_SCHEMA}},
    )
    assert free.text is None and free.status == "completed"
    with pytest.raises(json.JSONDecodeError):
        json.loads(free.output_text)


def test_sglang_api_key_is_a_bearer_key_only():
    with SGLangStandin(api_key="sk-agent", **GPT_OSS) as server:
        keyed = Endpoint(id="k", url=server.url, model="gpt-oss-20b", engine="sglang", api_key="sk-agent")
        messages_round(keyed)  # the client sends it as Authorization: Bearer
        # Claude Code sends ANTHROPIC_API_KEY as x-api-key, which SGLang's auth never reads (hence
        # ANTHROPIC_AUTH_TOKEN in `env --for claude-code`).
        body = {"model": "gpt-oss-20b", "max_tokens": 8, "messages": HELLO}
        wrong_way = httpx.post(f"{server.url}/v1/messages", json=body, headers={"x-api-key": "sk-agent"})
        assert wrong_way.status_code == 401


# --- a Daytona endpoint serving SGLang ---------------------------------------------------------------------


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    with sglang_daytona_standin() as api:
        monkeypatch.setenv("DAYTONA_API_KEY", api.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", api.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.2)
        yield api


@pytest.mark.parametrize("auth", ["token", "key", "signed"])
def test_daytona_endpoint_serves_both_agent_apis_in_each_auth_mode(daytona, closing, auth):
    spec = resolve_spec("qwen3-coder-30b", provider="daytona", auth=auth, port=free_port(), boot_timeout=60)
    endpoint = lifecycle.up(spec)
    assert (PREVIEW_TOKEN_HEADER in endpoint.headers) == (auth == "token")
    messages_round(endpoint)
    client = closing(responses_round(endpoint))
    with pytest.raises(openai.InternalServerError):  # SGLang's own refusal, through the preview proxy
        client.responses.create(model=endpoint.model, input="Weather?", tools=[RESPONSES_TOOL])
    called = closing(anthropic_client(endpoint)).messages.create(
        model=endpoint.model,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    assert called.stop_reason == "tool_use" and called.content[-1].type == "tool_use"
    if auth == "token":  # without the preview token the proxy refuses before SGLang sees anything
        bare = closing(anthropic.Anthropic(base_url=endpoint.url, api_key="EMPTY", max_retries=0))
        with pytest.raises(anthropic.AuthenticationError):
            bare.messages.create(model=endpoint.model, max_tokens=8, messages=HELLO)


# --- a local endpoint: llama-server's own routes behind the adapter ----------------------------------------


def forced_tool_call(endpoint: Endpoint) -> dict:
    """What forces the random tiny model into a call (engines/llamacpp_tools.py's recipe), as extra fields:
    llama-server copies a Responses body's other fields into its chat request."""
    ids = httpx.post(
        f"{endpoint.url}/tokenize",
        headers=endpoint.request_headers(),
        json={"content": "<tool_call></tool_call>"},
        timeout=10,
    ).json()["tokens"]
    return {
        "logit_bias": {str(ids[0]): 100, str(ids[1]): -100},
        "presence_penalty": 100,
        "stop": ["</tool_call>"],
        "parallel_tool_calls": False,
        "chat_template_kwargs": {"enable_thinking": False},
    }


@pytest.mark.parametrize("auth", ["token", "key"])
def test_local_endpoint_serves_both_agent_apis(llama_server, tiny_model, closing, auth):
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local", auth=auth))
    messages_round(endpoint)
    client = closing(responses_round(endpoint))

    called = client.responses.create(
        model=endpoint.model,
        input="What is the weather in Paris?",
        tools=[RESPONSES_TOOL],
        max_output_tokens=256,
        extra_body=forced_tool_call(endpoint),
    )
    call = next(item for item in called.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("Paris", "Lisbon")

    # The adapter turns the Responses API's `text.format` into the response_format llama-server enforces.
    picked = client.responses.create(
        model=endpoint.model,
        input="Pick a colour and a number",
        max_output_tokens=64,
        text={"format": {"type": "json_schema", "name": "pick", "schema": PICK_SCHEMA, "strict": True}},
    )
    jsonschema.validate(json.loads(picked.output_text), PICK_SCHEMA)

    # A tool round trip in Anthropic's blocks (the random model never picks a tool by itself, and
    # llama-server's Messages route passes no logit_bias on).
    answered = closing(anthropic_client(endpoint)).messages.create(
        model=endpoint.model,
        max_tokens=16,
        extra_body=GREEDY,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}],
            },
        ],
    )
    assert answered.content[0].type == "text" and answered.usage.input_tokens > 0

    refused = httpx.post(
        f"{endpoint.url}/v1/messages",
        json={"model": endpoint.model, "max_tokens": 4, "messages": HELLO},
        timeout=10,
    )
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    refused = httpx.post(f"{endpoint.url}/v1/responses", json={"input": "Hi"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"].startswith("missing_")


# --- a fleet ---------------------------------------------------------------------------------------------


def test_fleet_behind_smg_serves_both_agent_apis(llama_server, tiny_model, closing):
    fleet = fleet_up(resolve_spec("tiny", provider="local"), 2, "round_robin", gateway="smg")
    messages_round(fleet.endpoint)
    closing(responses_round(fleet.endpoint))
    body = {"model": fleet.endpoint.model, "max_tokens": 4, "messages": HELLO}
    refused = httpx.post(
        f"{fleet.url}/v1/messages", json=body, headers={"x-api-key": fleet.endpoint.api_key or ""}
    )
    assert refused.status_code == 401  # smg reads the key as Bearer only, and says so in Anthropic's shape
    assert refused.json()["error"]["type"] == "authentication_error"


def test_a_fleet_behind_sglang_router_has_no_messages_and_env_says_so(llama_server, tiny_model, closing):
    fleet = fleet_up(resolve_spec("tiny", provider="local"), 1, "round_robin")
    closing(responses_round(fleet.endpoint))  # sglang-router 0.3.2 routes /v1/responses
    gone = httpx.post(
        f"{fleet.url}/v1/messages",
        headers=fleet.endpoint.request_headers(),
        json={"model": fleet.endpoint.model, "max_tokens": 4, "messages": HELLO},
        timeout=10,
    )
    assert gone.status_code == 404
    result = run_cli("env", fleet.id, "--for", "claude-code")
    assert result.returncode != 0 and "--gateway smg" in result.stderr
    assert run_cli("env", fleet.id, "--for", "openai").returncode == 0


# --- sandserve env --for ----------------------------------------------------------------------------------

PLAIN_ANTHROPIC_SCRIPT = """
import os, anthropic
client = anthropic.Anthropic()  # ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN / ANTHROPIC_API_KEY
reply = client.messages.create(model=os.environ["MODEL"], max_tokens=8, extra_body={"temperature": 0},
                               messages=[{"role": "user", "content": "Hello"}])
print(reply.type, reply.stop_reason, len(reply.content[0].text) > 0)
"""


@pytest.mark.parametrize("auth", ["key", "public"])
def test_eval_env_for_anthropic_then_a_plain_sdk_script_answers(llama_server, tiny_model, auth, tmp_path):
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local", auth=auth))
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_ANTHROPIC_SCRIPT)
    python = sys.executable
    shell = f'eval "$({python} -m sandserve.cli env {endpoint.id} --for anthropic)" && exec {python} {script}'
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    kind, stop_reason, has_text = done.stdout.split()
    assert kind == "message" and stop_reason in ("end_turn", "max_tokens") and has_text == "True"
    assert "sandserve" not in script.read_text()


# --- bench on either agent API ------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_bench_drives_either_agent_api_on_the_local_engine(local_endpoint, api):
    # llama-server's Messages route keeps only temperature/top_p/top_k/stream/chat_template_kwargs of the
    # extra fields (server_chat_convert_anthropic_to_oai), so `ignore_eos` is lost there and the tiny random
    # model, sampling, ends on EOS after one token about once in 70 requests. Greedy decoding makes its
    # answers the same every run.
    greedy = [replace(p, extra={**p.extra, "temperature": 0}) for p in random_prompts(16, 12).take(5)]
    config = BenchConfig(LoadPlan("concurrency", (2,), requests_per_level=4), api=api, warmup=1)
    result = run_bench_sync(local_endpoint, PromptSource("random, greedy", items=greedy), config).result
    [level] = result.levels
    assert level.metrics is not None and level.metrics.completed == 4, [r.error for r in level.records]
    for record in level.records:
        assert record.prompt_tokens and record.completion_tokens and len(record.chunk_times) > 1
    assert result.config["api"] == api


def test_bench_on_sglangs_agent_apis_reports_what_sglang_reports():
    plan = LoadPlan("concurrency", (2,), requests_per_level=4)
    with SGLangStandin(served_model_name="qwen3", model_path="Qwen/Qwen3-8B") as server:
        endpoint = Endpoint(id="sg", url=server.url, model="qwen3", engine="sglang", auth="public")
        messages = run_bench_sync(endpoint, random_prompts(16, 12), BenchConfig(plan, api="messages"))
        responses = run_bench_sync(endpoint, random_prompts(16, 12), BenchConfig(plan, api="responses"))
    [level] = messages.result.levels
    assert level.metrics is not None and level.metrics.completed == 4
    assert all(r.completion_tokens and len(r.chunk_times) > 1 for r in level.records)
    # Without harmony SGLang 0.5.12.post1 streams the Responses output whole at the end, counted as zero.
    [level] = responses.result.levels
    assert level.metrics is not None and level.metrics.completed == 4
    assert all(r.completion_tokens == 0 and len(r.chunk_times) == 1 for r in level.records)


@pytest.mark.parametrize("auth", ["token", "key"])
def test_code_run_beside_the_server_finds_it_with_the_plain_anthropic_sdk(llama_server, tiny_model, auth):
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local", auth=auth))
    script = "ask.py"
    with open(script, "w") as handle:
        handle.write(PLAIN_ANTHROPIC_SCRIPT)
    result = run_cli("run", endpoint.id, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "message" and result.stdout.split()[-1] == "True"
