"""The guide's tour, run against one endpoint: each feature tried for real, then a table of what passed.

Steps: chat, streaming, reasoning effort, structured output (JSON schema), regex, EBNF, the tool-calling loop,
the prefix-cache demo, and the agent APIs (Responses, Anthropic Messages: ``tour_agents.py``). ``run_tour``
yields one ``TourStep`` per feature as it finishes; the CLI prints them. A feature the engine does not offer
is "unavailable" (with the reason), not a failure; an endpoint that stops answering ends the tour with
``EndpointUnavailableError``.

On the tiny random-weight model the tour says so: its text is gibberish by construction, what is constrained
is still valid, and the first tool call is forced (a random model never picks a tool by itself).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sandserve.client.chat import (
    ChatOptions,
    ChatReply,
    Delta,
    ask,
    ask_streaming,
    build_messages,
    reasoning_plan,
)
from sandserve.client.constrained import pick_constraint
from sandserve.client.transport import endpoint_errors
from sandserve.client.usage import cache_stats
from sandserve.engines import get_engine
from sandserve.errors import CapabilityError, EndpointUnavailableError, SandserveError
from sandserve.tools.declaration import tool
from sandserve.tools.loop import run_tool_loop
from sandserve.tools.sandboxes import tool_runner_for
from sandserve.workloads.tour_agents import messages_lines, responses_lines

if TYPE_CHECKING:
    from sandserve.endpoint import Endpoint

Status = Literal["passed", "failed", "unavailable"]

HAIKU_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
        "season": {"type": "string"},
    },
    "required": ["title", "lines", "season"],
}
HAIKU_PROMPT = "Compose a haiku about GPU sandboxes, as JSON with title, lines, and season."
COLOR_PROMPT = "The best color for a terminal theme is"
COLOR_REGEX = " (red|green|blue|amber)"
DATE_EBNF = (
    'root ::= year "-" month "-" day\n'
    'year ::= "20" [0-9] [0-9]\n'
    'month ::= "0" [1-9] | "1" [0-2]\n'
    'day ::= "0" [1-9] | [12] [0-9] | "3" [01]\n'
)
DATE_PATTERN = r"20\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
CACHE_CONTEXT = "The Daytona platform provides isolated sandboxes for AI agents to safely execute code. " * 60


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name, e.g. "Lisbon".
    """
    rng = random.Random(city.lower())  # same city, same weather
    temp = rng.randint(-5, 35)
    sky = rng.choice(["sunny", "cloudy", "rainy", "foggy", "windy"])
    return f"{temp}°C and {sky} in {city}"


@dataclass
class TourStep:
    key: str
    title: str
    status: Status
    lines: list[str] = field(default_factory=list)
    """What happened, as plain text lines."""
    note: str = ""
    """One line for the summary table."""


@dataclass(frozen=True)
class TourSettings:
    random_model: bool
    """The tiny random-weight model: force the tool call, keep budgets small, say so."""
    max_tokens: int
    schema_max_tokens: int
    bounded_strings: bool = False
    """Strings of the JSON schema bounded (40 plain characters): a small model on a CPU can otherwise write
    one string for thousands of tokens, minutes at a CPU's pace."""


def settings_for(endpoint: Endpoint) -> TourSettings:
    if endpoint.serves_random_model:
        return TourSettings(random_model=True, max_tokens=48, schema_max_tokens=512, bounded_strings=True)
    if get_engine(endpoint.engine).runs_on_cpu:
        return TourSettings(random_model=False, max_tokens=1024, schema_max_tokens=512, bounded_strings=True)
    return TourSettings(random_model=False, max_tokens=4096, schema_max_tokens=4096)


def run_tour(endpoint: Endpoint, only: Collection[str] | None = None) -> Iterator[TourStep]:
    """Each step in turn (``only``: just the steps with these keys, e.g. ``{"tool_calls"}``)."""
    settings = settings_for(endpoint)
    client = endpoint.openai(timeout=300, max_retries=0)
    steps: list[tuple[str, str, Callable[[], TourStep]]] = [
        ("chat", "chat", lambda: _chat(endpoint, client, settings)),
        ("streaming", "streaming", lambda: _streaming(endpoint, client, settings)),
        ("reasoning_effort", "reasoning effort", lambda: _reasoning_effort(endpoint, client, settings)),
        ("json_schema", "structured output (JSON schema)", lambda: _json_schema(endpoint, client, settings)),
        ("regex", "regex", lambda: _regex(endpoint)),
        ("ebnf", "EBNF grammar", lambda: _ebnf(endpoint)),
        ("tool_calls", "tool calling loop", lambda: _tool_loop(endpoint, client, settings)),
        ("prefix_cache", "prefix cache", lambda: _prefix_cache(endpoint, client)),
        ("responses", "Responses API", lambda: _agent_step("responses", endpoint, settings)),
        ("messages", "Anthropic Messages", lambda: _agent_step("messages", endpoint, settings)),
    ]
    with client:  # closed however the tour ends, its connections with it
        for key, title, run in steps:
            if only is not None and key not in only:
                continue
            try:
                yield run()
            except EndpointUnavailableError:
                raise
            except CapabilityError as exc:
                yield TourStep(
                    key,
                    title,
                    "unavailable",
                    [exc.message, *([exc.hint] if exc.hint else [])],
                    note=exc.message,
                )
            except SandserveError as exc:
                yield TourStep(key, title, "failed", [exc.message], note=exc.message)


def _agent_step(key: str, endpoint: Endpoint, settings: TourSettings) -> TourStep:
    run, title = (
        (responses_lines, "Responses API") if key == "responses" else (messages_lines, "Anthropic Messages")
    )
    passed, lines, note = run(endpoint, settings.max_tokens)
    return TourStep(key, title, "passed" if passed else "failed", lines, note=note)


def _chat(endpoint: Endpoint, client: Any, settings: TourSettings) -> TourStep:
    question = "Write a haiku about a sandbox where AI agents run code."
    reply = ask(endpoint, question, ChatOptions(max_tokens=settings.max_tokens), client=client)
    lines = [f"asked: {question}", *_reply_lines(reply)]
    passed = bool(reply.content or reply.reasoning)
    return TourStep(
        "chat",
        "chat",
        "passed" if passed else "failed",
        lines,
        note=f"{reply.completion_tokens} tokens" if passed else "empty reply",
    )


def _streaming(endpoint: Endpoint, client: Any, settings: TourSettings) -> TourStep:
    question = "Write ten haikus about tokens arriving one at a time."
    counts = {"reasoning": 0, "content": 0}
    final: ChatReply | None = None
    options = ChatOptions(max_tokens=settings.max_tokens)
    for event in ask_streaming(endpoint, question, options, client=client):
        if isinstance(event, Delta):
            counts[event.channel] += 1
        else:
            final = event
    assert final is not None
    lines = [
        f"asked: {question}",
        f"{counts['reasoning']} reasoning deltas and {counts['content']} answer deltas, kept apart",
        *_reply_lines(final),
    ]
    if settings.random_model and not counts["reasoning"]:
        lines.append("(the random model does not think on its own, so no reasoning deltas)")
    passed = counts["reasoning"] + counts["content"] > 1
    return TourStep(
        "streaming",
        "streaming",
        "passed" if passed else "failed",
        lines,
        note=f"{counts['reasoning']} reasoning + {counts['content']} answer deltas",
    )


def _reasoning_effort(endpoint: Endpoint, client: Any, settings: TourSettings) -> TourStep:
    question = "Write a haiku about thinking before speaking."
    lines = [f"asked: {question}"]
    plan = reasoning_plan(endpoint, "high")  # raises CapabilityError where the model has no dial
    if plan.note:
        lines.append(f"note: {plan.note}")
    sizes = {}
    for effort in ("low", "high"):
        reply = ask(
            endpoint,
            question,
            ChatOptions(max_tokens=settings.max_tokens, reasoning_effort=effort),
            client=client,
        )
        sizes[effort] = len(reply.reasoning)
        lines.append(
            f"{effort}: {len(reply.reasoning)} characters of reasoning, {reply.completion_tokens} tokens"
        )
    if sizes["high"] > sizes["low"]:
        return TourStep(
            "reasoning_effort",
            "reasoning effort",
            "passed",
            lines,
            note=f"more reasoning at high ({sizes['high']} vs {sizes['low']} characters)",
        )
    if settings.random_model:
        lines.append("(the random model never thinks on its own, so the dial has nothing to change)")
        mapping = f" ({plan.note})" if plan.note else ""
        return TourStep(
            "reasoning_effort",
            "reasoning effort",
            "unavailable",
            lines,
            note=f"accepted{mapping}; a random model never thinks",
        )
    return TourStep(
        "reasoning_effort",
        "reasoning effort",
        "failed",
        lines,
        note="accepted, but high gave no more reasoning than low",
    )


def _json_schema(endpoint: Endpoint, client: Any, settings: TourSettings) -> TourStep:
    question = HAIKU_PROMPT
    schema = HAIKU_SCHEMA
    lines = [f"asked: {question}"]
    if settings.bounded_strings:
        # A random or small model may not end a free string soon; and a random model's byte-level tokens can
        # leave broken UTF-8 (shown as U+FFFD) inside a merely length-bounded string. Short ASCII patterns
        # avoid both.
        schema = bounded_haiku_schema()
        lines.append("strings limited to 40 plain ASCII characters (a small model on a CPU)")
    constraint = pick_constraint(json_schema=schema)
    reply = ask(
        endpoint,
        question,
        ChatOptions(max_tokens=settings.schema_max_tokens, constraint=constraint),
        client=client,
    )
    lines += _reply_lines(reply)
    try:
        value = reply.json()
    except ValueError as exc:
        note = f"did not parse ({exc}; finish_reason={reply.finish_reason})"
        return TourStep("json_schema", "structured output (JSON schema)", "failed", [*lines, note], note=note)
    problem = schema_problem(value, schema)
    if problem:
        return TourStep(
            "json_schema", "structured output (JSON schema)", "failed", [*lines, problem], note=problem
        )
    return TourStep(
        "json_schema",
        "structured output (JSON schema)",
        "passed",
        lines,
        note="parsed and validated against the schema",
    )


def bounded_haiku_schema(max_length: int = 40) -> dict[str, Any]:
    string = {"type": "string", "pattern": f"^[A-Za-z0-9 ,.;:!?'-]{{1,{max_length}}}$"}
    return {
        **HAIKU_SCHEMA,
        "properties": {
            "title": string,
            "lines": {**HAIKU_SCHEMA["properties"]["lines"], "items": string},
            "season": string,
        },
    }


def _regex(endpoint: Endpoint) -> TourStep:
    result = endpoint.generate(COLOR_PROMPT, regex=COLOR_REGEX, max_new_tokens=8)
    how = get_engine(endpoint.engine).constraint_route("regex")
    lines = [f"{COLOR_PROMPT}{result.text!r}   (regex {COLOR_REGEX!r}, {how})"]
    passed = re.fullmatch(COLOR_REGEX, result.text) is not None
    return TourStep(
        "regex",
        "regex",
        "passed" if passed else "failed",
        lines,
        note=f"{result.text.strip()!r} matches" if passed else f"{result.text!r} does not match",
    )


def _ebnf(endpoint: Endpoint) -> TourStep:
    result = endpoint.generate("Today's date in ISO format: ", ebnf=DATE_EBNF, max_new_tokens=16)
    how = get_engine(endpoint.engine).constraint_route("ebnf")
    lines = [f"date grammar ({how}) -> {result.text!r}"]
    passed = re.fullmatch(DATE_PATTERN, result.text.strip()) is not None
    return TourStep(
        "ebnf",
        "EBNF grammar",
        "passed" if passed else "failed",
        lines,
        note=f"{result.text.strip()!r} is a date" if passed else f"{result.text!r} is not a date",
    )


def _tool_loop(endpoint: Endpoint, client: Any, settings: TourSettings) -> TourStep:
    question = "Write a haiku about the current weather in Lisbon."
    weather = tool(get_weather)
    force = "get_weather" if settings.random_model else None
    lines = [f"asked: {question}"]
    if force:
        lines.append("forcing the first call to get_weather: a random-weight model never picks a tool itself")
    with tool_runner_for(endpoint) as runner:
        lines.append(f"tool calls run in: {runner.isolation}")
        result = run_tool_loop(
            endpoint,
            build_messages(question),
            [weather],
            runner,
            force_tool=force,
            max_tokens=settings.max_tokens,
            client=client,
        )
    for call in result.calls:
        lines.append(f"call {call.name}({_compact_json(call.arguments)}) -> {call.result}")
    lines.append(f"answer after {result.rounds} requests: {result.answer.strip()!r}")
    passed = bool(result.calls) and result.rounds >= 2
    note = "no tool call"
    if result.calls:
        note = f"{len(result.calls)} call(s), answered after {result.rounds} requests"
    return TourStep(
        "tool_calls",
        "tool calling loop",
        "passed" if passed else "failed",
        lines,
        note=note + (" (forced)" if force else ""),
    )


def _prefix_cache(endpoint: Endpoint, client: Any) -> TourStep:
    messages = build_messages(CACHE_CONTEXT + "Summarize the above in one sentence.")
    lines = []
    stats = []
    seconds = []
    for attempt in (1, 2):
        started = time.perf_counter()
        with endpoint_errors(endpoint):
            response = client.chat.completions.create(model=endpoint.model, messages=messages, max_tokens=32)
        seconds.append(time.perf_counter() - started)
        stat = cache_stats(response)
        stats.append(stat)
        lines.append(f"attempt {attempt}: {seconds[-1]:.2f}s, {stat}")
    passed = stats[1].cached_tokens > 0
    speedup = seconds[0] / seconds[1] if seconds[1] > 0 else 0.0
    note = f"attempt 2: {stats[1]}, {speedup:.1f}x the speed of attempt 1"
    return TourStep("prefix_cache", "prefix cache", "passed" if passed else "failed", lines, note=note)


def _reply_lines(reply: ChatReply) -> list[str]:
    lines = []
    if reply.reasoning:
        lines.append(f"reasoning: {_short(reply.reasoning)}")
    lines.append(f"answer: {_short(reply.content)}")
    lines.append(f"{reply.cache}; finish_reason={reply.finish_reason}")
    return lines


def _compact_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        return text.strip()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """Why ``value`` does not validate against ``schema`` (None if it does). Uses ``jsonschema`` when
    installed; otherwise checks only that the value parsed, and says so."""
    try:
        import jsonschema
    except ImportError:
        return None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return f"parsed but does not validate: {exc.message}"
    return None
