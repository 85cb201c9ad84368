"""The guide's own client code, run unchanged against every kind of endpoint sandserve serves.

Each call below is the guide's, as its text writes it (attribute access on ``delta.reasoning_content`` and
``message.reasoning_content``, the haiku ``response_format``, ``reasoning_effort``, the tool loop, the cache
loop, LiteLLM, the classification request, curl with ``$TOKEN``), with two changes only: the model name comes
from ``GUIDE_MODEL`` (the guide's "gpt-oss-20b", accepted by every target), and the guide's ``max_tokens``
budgets are cut (``BUDGET``) to keep the suite fast on 2 cores; answers cut by a budget are checked as such.

Targets: the local default (SmolLM2-135M-Instruct behind the llama-server adapter, token auth, handed over as
``eval "$(sandserve up)"`` hands it), the SGLang stand-in (shapes read from SGLang 0.5.12's source) and a
fleet gateway (SGLang's Model Gateway in front of a local SmolLM2 worker).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from conftest import parse_exports
from standins.sglang_server import SGLangStandin

from sandserve.client.chat import ChatOptions, ask
from sandserve.client.constrained import pick_constraint
from sandserve.endpoint import Endpoint
from sandserve.errors import AnswerCutShortError, ServerFailedError
from sandserve.fleet import fleet_down, fleet_up
from sandserve.serve.resolve import resolve_spec

GUIDE_MODEL = "gpt-oss-20b"
BUDGET = {"curl": 96, "stream": 48, "reasoning": 64, "haiku": 400, "tools": 64}
HAIKU_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
        "season": {"type": "string"},
    },
    "required": ["title", "lines", "season"],
}
HAIKU_PROMPT = "Compose a haiku about GPU sandboxes, as JSON with title, lines, and season."


def exports_of(endpoint: Endpoint) -> dict[str, str]:
    """What `eval "$(sandserve up)"` puts in the shell."""
    return parse_exports(endpoint.export_lines())


@pytest.fixture
def local_default(smollm2_endpoint: Endpoint) -> dict[str, str]:
    return exports_of(smollm2_endpoint)


@pytest.fixture
def sglang_standin() -> Iterator[dict[str, str]]:
    flags = {"reasoning_parser": "gpt-oss", "tool_call_parser": "gpt-oss", "enable_cache_report": True}
    with SGLangStandin(served_model_name=GUIDE_MODEL, **flags) as server:
        # The guide's serve_sglang.py hands over ENDPOINT and TOKEN; without a proxy the token is unused.
        yield {"ENDPOINT": server.url, "TOKEN": "", "MODEL": GUIDE_MODEL}


@pytest.fixture
def fleet_gateway(llama_server, smollm2_model) -> Iterator[dict[str, str]]:
    # The gateway routes by model name, so the workers serve under the name the guide's clients send. The
    # worker is the local default: the tiny model's random JSON strings, cut at max_tokens, sometimes fail
    # llama-server's output parser (HTTP 500), and the gateway then opens its circuit breaker.
    spec = resolve_spec("smollm2-135m", provider="local", served_name=GUIDE_MODEL)
    fleet = fleet_up(spec, 1, "cache_aware", public_gateway=True)
    try:
        yield exports_of(fleet.endpoint)
    finally:
        fleet_down(fleet.id)


@pytest.fixture(params=["local_default", "sglang_standin", "fleet_gateway"])
def guide_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env: dict[str, str] = request.getfixturevalue(request.param)
    assert "ENDPOINT" in env and "TOKEN" in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def guide_client(guide_env: dict[str, str]) -> Iterator[openai.OpenAI]:
    """The guide's client construction (its classify_passages.py, made synchronous), closed after the test."""
    with openai.OpenAI(
        base_url=f"{os.environ['ENDPOINT']}/v1",
        api_key="EMPTY",
        default_headers={"x-daytona-preview-token": os.environ["TOKEN"]},
    ) as client:
        yield client


def test_the_guides_clients_run_unchanged(guide_client, litellm):
    client = guide_client

    # serve_sglang.py's readiness poll: /health_generate through the preview URL, with the token header.
    import requests

    hdr = {"x-daytona-preview-token": os.environ["TOKEN"]}
    assert (
        requests.get(f"{os.environ['ENDPOINT']}/health_generate", headers=hdr, timeout=10).status_code == 200
    )

    # query.sh: the guide's curl line, under `set -u` (TOKEN must be set).
    curl = subprocess.run(
        [
            "bash",
            "-c",
            "set -euo pipefail\n"
            'curl -sS --connect-timeout 30 --max-time 120 "$ENDPOINT/v1/chat/completions" '
            '-H "x-daytona-preview-token: $TOKEN" -H "Content-Type: application/json" '
            f'-d \'{{"model": "{GUIDE_MODEL}", "messages": [{{"role": "user", "content": '
            f'"Write a haiku about a sandbox where AI agents run code."}}], "max_tokens": '
            f"{BUDGET['curl']}}}'",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert curl.returncode == 0, curl.stderr
    answer = json.loads(curl.stdout)
    assert answer["choices"][0]["message"]["content"]
    assert "reasoning_content" in answer["choices"][0]["message"]
    assert "cached_tokens" in (answer["usage"].get("prompt_tokens_details") or {"cached_tokens": 0})

    # Streaming: reasoning_content read as an attribute on every delta.
    stream = client.chat.completions.create(
        model=GUIDE_MODEL,
        messages=[{"role": "user", "content": "Write ten haikus about tokens arriving one at a time."}],
        max_tokens=BUDGET["stream"],
        stream=True,
    )
    printed = []
    for chunk in stream:
        delta = chunk.choices[0].delta
        printed.append(delta.reasoning_content or delta.content or "")
    assert "".join(printed).strip()

    # Reasoning effort: the parsed trace in message.reasoning_content (null where the model does not reason).
    resp = client.chat.completions.create(
        model=GUIDE_MODEL,
        messages=[{"role": "user", "content": "Write a haiku about thinking before speaking."}],
        reasoning_effort="high",
        max_tokens=BUDGET["reasoning"],
    )
    reasoning = resp.choices[0].message.reasoning_content
    assert reasoning is None or isinstance(reasoning, str)
    assert resp.choices[0].message.content is not None or reasoning

    # Structured output with the guide's exact schema: a finished reply parses and has the three fields.
    resp = client.chat.completions.create(
        model=GUIDE_MODEL,
        messages=[{"role": "user", "content": HAIKU_PROMPT}],
        response_format={"type": "json_schema", "json_schema": {"name": "haiku", "schema": HAIKU_SCHEMA}},
        max_tokens=BUDGET["haiku"],
    )
    if resp.choices[0].finish_reason == "stop":
        haiku = json.loads(resp.choices[0].message.content)
        assert {"title", "lines", "season"} <= set(haiku) and len(haiku["lines"]) == 3
    else:
        assert resp.choices[0].finish_reason == "length"

    # The native /generate with a regex, as the guide's curl sends it.
    generate = subprocess.run(
        [
            "bash",
            "-c",
            'set -euo pipefail\ncurl -sS "$ENDPOINT/generate" -H "x-daytona-preview-token: $TOKEN" '
            '-H "Content-Type: application/json" -d \'{"text": "The best color for a terminal theme is", '
            '"sampling_params": {"max_new_tokens": 8, "regex": " (red|green|blue|amber)"}}\'',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generate.returncode == 0, generate.stderr
    assert json.loads(generate.stdout)["text"] in (" red", " green", " blue", " amber")

    run_the_tool_loop(client)
    attempts = run_the_cache_loop(client)
    assert attempts[1][1] > 0, attempts  # the second attempt's prompt came from the cache
    run_the_classification()
    # LiteLLM last: it sets an event loop for this thread that the `litellm` fixture closes after the test;
    # an asyncio.run() after it would drop that loop unclosed, to be reported whenever the collector ran.
    run_litellm(litellm)


def run_the_tool_loop(client: openai.OpenAI) -> None:
    def get_weather(city):
        rng = random.Random(city.lower())  # same city, same weather
        temp = rng.randint(-5, 35)
        sky = rng.choice(["sunny", "cloudy", "rainy", "foggy", "windy"])
        return f"{temp}°C and {sky} in {city}"

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "Write a haiku about the current weather in Lisbon."}]
    resp = client.chat.completions.create(
        model=GUIDE_MODEL, messages=messages, tools=tools, max_tokens=BUDGET["tools"]
    )
    msg = resp.choices[0].message
    if msg.tool_calls:
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            args = json.loads(call.function.arguments)
            result = get_weather(**args)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        resp = client.chat.completions.create(
            model=GUIDE_MODEL, messages=messages, max_tokens=BUDGET["tools"]
        )
    assert resp.choices[0].message.content is not None


def run_the_cache_loop(client: openai.OpenAI) -> list[tuple[float, int, int]]:
    context = "The Daytona platform provides isolated sandboxes for AI agents to safely execute code. " * 60
    attempts = []
    for _attempt in (1, 2):
        t0 = time.perf_counter()
        resp = client.chat.completions.create(
            model=GUIDE_MODEL,
            messages=[{"role": "user", "content": context + "Summarize the above in one sentence."}],
            max_tokens=32,
        )
        dt = time.perf_counter() - t0
        details = resp.usage.prompt_tokens_details  # omitted entirely on a cold cache
        cached = details.cached_tokens if details else 0
        attempts.append((dt, cached, resp.usage.prompt_tokens))
    return attempts


def run_litellm(litellm: Any) -> None:
    kwargs = {
        "model": f"openai/{GUIDE_MODEL}",
        "api_base": f"{os.environ['ENDPOINT']}/v1",
        "api_key": "EMPTY",
        "extra_headers": {"x-daytona-preview-token": os.environ["TOKEN"]},
    }
    messages = [{"role": "user", "content": "Write a haiku about a sandbox where AI agents run code."}]
    response = litellm.completion(**kwargs, messages=messages, max_tokens=BUDGET["curl"])
    assert response.choices[0].message.content
    # LiteLLM's own Delta drops a null reasoning_content (the guide shows no LiteLLM code to follow here).
    pieces = [
        getattr(chunk.choices[0].delta, "reasoning_content", None) or chunk.choices[0].delta.content or ""
        for chunk in litellm.completion(**kwargs, messages=messages, max_tokens=16, stream=True)
    ]
    assert "".join(pieces)


def run_the_classification() -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{os.environ['ENDPOINT']}/v1",
        api_key="EMPTY",
        default_headers={"x-daytona-preview-token": os.environ["TOKEN"]},
    )
    AUTHORS = ["Austen", "Bronte", "Dickens", "Doyle", "Eliot", "Hawthorne",
               "Melville", "Poe", "Shelley", "Stoker", "Twain", "Wells", "Wilde"]  # fmt: skip
    AUTHOR_QUESTION = f"Which of these authors wrote this passage: {', '.join(AUTHORS)}?"
    AUTHOR_SCHEMA = {"type": "object", "required": ["author"],
                     "properties": {"author": {"type": "string", "enum": AUTHORS}}}  # fmt: skip

    async def classify(passage, question, schema):
        resp = await client.chat.completions.create(
            model=GUIDE_MODEL,
            messages=[{"role": "user", "content": f"{passage}\n\n{question} Reply as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
            reasoning_effort="low",
            max_tokens=2048,
        )
        return json.loads(resp.choices[0].message.content)

    dataset = [
        ("Poe", "Once upon a midnight dreary, while I pondered, weak and weary."),
        ("Melville", "Call me Ishmael. Some years ago I thought I would sail about a little."),
    ]

    async def both() -> list[Any]:
        try:
            return await asyncio.gather(*(classify(p, AUTHOR_QUESTION, AUTHOR_SCHEMA) for _, p in dataset))
        finally:
            await client.close()

    authors = asyncio.run(both())
    assert all(answer["author"] in AUTHORS for answer in authors)


STRUCTURED_REQUESTS = 8  # two rounds of the four slots; bench/bench_structured.py measures the finish rate
STRUCTURED_BUDGET = 200


def test_structured_requests_never_fail_on_the_server(smollm2_endpoint):
    """The guide's haiku schema through the library: a finished answer is valid JSON of that schema, a cut one
    is reported as cut (naming max_tokens), and the server never fails."""
    options = ChatOptions(max_tokens=STRUCTURED_BUDGET, constraint=pick_constraint(json_schema=HAIKU_SCHEMA))

    def one(_: int) -> str:
        try:
            reply = ask(smollm2_endpoint, HAIKU_PROMPT, options)
        except AnswerCutShortError as cut:
            assert f"max_tokens={STRUCTURED_BUDGET}" in str(cut)
            return "cut"
        except ServerFailedError as failed:
            return f"server error: {failed}"
        haiku = reply.json()
        assert len(haiku["lines"]) == 3 and isinstance(haiku["title"], str)
        return "valid"

    with ThreadPoolExecutor(max_workers=4) as pool:  # the local default's four slots
        outcomes = list(pool.map(one, range(STRUCTURED_REQUESTS)))
    assert [o for o in outcomes if o.startswith("server error")] == []
    assert outcomes.count("valid") + outcomes.count("cut") == STRUCTURED_REQUESTS
    assert outcomes.count("valid") > 0
