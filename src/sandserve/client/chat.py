"""One chat turn against an endpoint, reasoning kept apart from the answer (what `sandserve chat` runs).

Reasoning effort is a per-model-family knob (presets.py ``reasoning_knob``), mapped honestly:
- ``reasoning_effort`` (gpt-oss): sent as is; SGLang honours low/medium/high, and so does llama.cpp for
  templates that read it (it passes the field to the chat template).
- ``enable_thinking`` (Qwen3 hybrids, the tiny local model) and ``thinking`` (DeepSeek V3.1): these models
  have only on and off, so "low" turns thinking off and "medium"/"high" leave it on; the reply's ``notes`` say
  so.
- a family with no knob, or an unknown model on llama.cpp: ``CapabilityError`` (nothing would change).
For a model of no known family the engine decides (``Engine.reasoning_effort_fields``): SGLang sends
``reasoning_effort`` (the server hands it to the template), with a note; llama.cpp has no dial of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sandserve.client.constrained import chat_constraint_params, check_chat_output
from sandserve.client.transport import endpoint_errors, openai_client
from sandserve.client.usage import NO_USAGE, CacheStats, usage_of
from sandserve.engines import get_engine
from sandserve.errors import CapabilityError
from sandserve.presets import PRESETS, Preset, find_preset
from sandserve.results import Constraint

if TYPE_CHECKING:
    import openai

    from sandserve.endpoint import Endpoint

ReasoningEffort = Literal["low", "medium", "high"]
REASONING_EFFORTS: tuple[str, ...] = ("low", "medium", "high")


@dataclass(frozen=True)
class ReasoningPlan:
    params: dict[str, Any]
    """Fields to merge into the request (``extra_body`` content)."""
    note: str | None = None


def reasoning_plan(endpoint: Endpoint, effort: ReasoningEffort) -> ReasoningPlan:
    """How to ask this endpoint's model for ``effort``; raises ``CapabilityError`` if it has no such dial."""
    if effort not in REASONING_EFFORTS:
        raise CapabilityError(
            f"Reasoning effort {effort!r}",
            endpoint.engine,
            hint=f"Use one of: {', '.join(REASONING_EFFORTS)}.",
        )
    preset = preset_of(endpoint)
    knob = preset.reasoning_knob if preset else None
    if knob == "reasoning_effort":
        return ReasoningPlan({"reasoning_effort": effort})
    if knob in ("enable_thinking", "thinking"):
        on = effort != "low"
        note = (
            f"{preset.name if preset else endpoint.model} has no effort levels, only thinking on/off: "
            f"{effort!r} -> {knob}={str(on).lower()}"
        )
        return ReasoningPlan({"chat_template_kwargs": {knob: on}}, note)
    if preset is not None:
        raise CapabilityError(
            "Reasoning effort",
            endpoint.engine,
            hint="This model does not reason (or has no per-request dial): leave --reasoning-effort out. "
            "gpt-oss has low/medium/high and Qwen3 thinking on/off; both need a GPU "
            "(`sandserve up --provider daytona --model gpt-oss-20b`).",
            model=preset.name,
        )
    # A model of no known family: the engine says whether it has a dial of its own.
    params, note = get_engine(endpoint.engine).reasoning_effort_fields(effort)
    return ReasoningPlan(params, note)


def preset_of(endpoint: Endpoint) -> Preset | None:
    """The preset the endpoint was brought up with, else the one whose name or served name is its model."""
    by_record = find_preset(endpoint.info.preset or "")
    return (
        by_record
        or find_preset(endpoint.model)
        or next((preset for preset in PRESETS if preset.served_name == endpoint.model), None)
    )


@dataclass(frozen=True)
class ChatOptions:
    system: str | None = None
    max_tokens: int = 1024
    reasoning_effort: ReasoningEffort | None = None
    constraint: Constraint | None = None
    temperature: float | None = None
    extra_body: dict[str, Any] | None = None
    """Engine-specific request fields, sent as they are (merged last)."""


def chat_request(
    endpoint: Endpoint, messages: list[dict[str, Any]], options: ChatOptions
) -> tuple[dict[str, Any], list[str]]:
    """The keyword arguments for ``chat.completions.create`` and the notes about how options were mapped."""
    params: dict[str, Any] = {"model": endpoint.model, "messages": messages, "max_tokens": options.max_tokens}
    if options.temperature is not None:
        params["temperature"] = options.temperature
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if options.reasoning_effort is not None:
        plan = reasoning_plan(endpoint, options.reasoning_effort)
        extra.update(plan.params)
        if plan.note:
            notes.append(plan.note)
    constraint_params = chat_constraint_params(endpoint, options.constraint)
    _merge_extra(extra, constraint_params.pop("extra_body", {}))
    params.update(constraint_params)
    _merge_extra(extra, options.extra_body or {})
    if extra:
        # reasoning_effort is a known SDK argument; the rest are engine fields the SDK passes through.
        if "reasoning_effort" in extra:
            params["reasoning_effort"] = extra.pop("reasoning_effort")
        if extra:
            params["extra_body"] = extra
    return params, notes


def _merge_extra(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def build_messages(prompt: str, system: str | None = None) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


@dataclass
class ChatReply:
    content: str
    reasoning: str
    finish_reason: str | None
    cache: CacheStats
    completion_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def json(self) -> Any:
        """The answer decoded as JSON (for a JSON-schema constraint)."""
        return json.loads(self.content)


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed reply: ``channel`` is "reasoning" or "content"."""

    channel: Literal["reasoning", "content"]
    text: str


def ask(
    endpoint: Endpoint,
    prompt: str,
    options: ChatOptions = ChatOptions(),
    *,
    client: openai.OpenAI | None = None,
) -> ChatReply:
    """One question, one whole answer."""
    params, notes = chat_request(endpoint, build_messages(prompt, options.system), options)
    with openai_client(endpoint, client) as sdk, endpoint_errors(endpoint):
        response = sdk.chat.completions.create(**params)
    choice = response.choices[0]
    message = choice.message
    usage = usage_of(response)
    reply = ChatReply(
        content=message.content or "",
        reasoning=reasoning_of(message) or "",
        finish_reason=choice.finish_reason,
        cache=usage.cache,
        completion_tokens=usage.completion_tokens,
        notes=notes,
    )
    check_chat_output(endpoint, options.constraint, reply.content, reply.finish_reason, options.max_tokens)
    return reply


def ask_streaming(
    endpoint: Endpoint,
    prompt: str,
    options: ChatOptions = ChatOptions(),
    *,
    client: openai.OpenAI | None = None,
) -> Iterator[Delta | ChatReply]:
    """The answer as it comes: ``Delta`` pieces (reasoning and content apart), then the ``ChatReply``."""
    params, notes = chat_request(endpoint, build_messages(prompt, options.system), options)
    content: list[str] = []
    reasoning: list[str] = []
    finish_reason = None
    usage = NO_USAGE
    with openai_client(endpoint, client) as sdk, endpoint_errors(endpoint):
        stream = sdk.chat.completions.create(**params, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                usage = usage_of(chunk.usage)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish_reason = choice.finish_reason or finish_reason
            thought = reasoning_of(choice.delta)
            if thought:
                reasoning.append(thought)
                yield Delta("reasoning", thought)
            if choice.delta.content:
                content.append(choice.delta.content)
                yield Delta("content", choice.delta.content)
    reply = ChatReply(
        content="".join(content),
        reasoning="".join(reasoning),
        finish_reason=finish_reason,
        cache=usage.cache,
        completion_tokens=usage.completion_tokens,
        notes=notes,
    )
    check_chat_output(endpoint, options.constraint, reply.content, reply.finish_reason, options.max_tokens)
    yield reply


def reasoning_of(message_or_delta: Any) -> str | None:
    """``reasoning_content`` of a message or delta: an extra field the SDK keeps but does not declare."""
    value = getattr(message_or_delta, "reasoning_content", None)
    if value is None and isinstance(message_or_delta, dict):
        value = message_or_delta.get("reasoning_content")
    return value if isinstance(value, str) else None
