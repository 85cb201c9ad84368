"""The standard OpenAI tool-calling loop: the model asks for calls, they run isolated, their results go back,
until the model answers without asking for more.

Forcing the first call (``force_tool="get_weather"``) is for models that will not pick a tool by themselves,
such as the tiny random-weight model. The engine shapes it (``Engine.force_tool_call``): SGLang constrains
``tool_choice={"type": "function", "function": {"name": ...}}``; llama.cpp needs a recipe of its own
(``engines/llamacpp_tools.py``) and, after the forced call, ``tool_choice: "none"``.
A tool's error (bad arguments, a crash, a limit) goes back to the model as the tool message, as loops expect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandserve.client.transport import endpoint_errors, openai_client, post_json
from sandserve.client.usage import CacheStats, cache_stats
from sandserve.engines import get_engine
from sandserve.errors import CapabilityError, ConfigError
from sandserve.tools.declaration import Tool, ToolArgumentsError, tool_specs

if TYPE_CHECKING:
    import openai

    from sandserve.endpoint import Endpoint
    from sandserve.tools.sandboxes import ToolRunner


@dataclass(frozen=True)
class ToolCallRecord:
    name: str
    arguments: str
    """The arguments exactly as the model wrote them (JSON text)."""
    ok: bool
    result: str
    """What went back to the model (the result, or the error's text)."""


@dataclass
class ToolLoopResult:
    answer: str
    messages: list[dict[str, Any]]
    """The whole conversation, tool messages included."""
    calls: list[ToolCallRecord] = field(default_factory=list)
    rounds: int = 0
    forced: bool = False
    finish_reason: str | None = None
    cache: list[CacheStats] = field(default_factory=list)
    """Cache figures of every request, in order."""


def run_tool_loop(
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    tools: list[Tool],
    runner: ToolRunner,
    *,
    force_tool: str | None = None,
    max_rounds: int = 4,
    max_tokens: int = 1024,
    client: openai.OpenAI | None = None,
    **create_kwargs: Any,
) -> ToolLoopResult:
    """Run the loop until the model answers (or ``max_rounds`` requests): the answer and every call."""
    if not endpoint.capabilities().tool_calls:
        raise CapabilityError(
            "Tool calling",
            endpoint.engine,
            hint="Its chat template has no syntax for tools: serve a model that calls tools (Qwen3, gpt-oss; "
            "locally `--model tiny` makes forced calls).",
            model=endpoint.model,
        )
    by_name = {t.name: t for t in tools}
    if force_tool is not None and force_tool not in by_name:
        raise ConfigError(
            f"force_tool={force_tool!r} is not one of the tools offered ({', '.join(by_name)}).",
            hint="Name one of the tools passed in `tools`.",
        )
    with openai_client(endpoint, client) as sdk:
        conversation = list(messages)
        result = ToolLoopResult(answer="", messages=conversation, forced=force_tool is not None)
        for round_index in range(max_rounds):
            params: dict[str, Any] = {
                "model": endpoint.model,
                "messages": conversation,
                "tools": tool_specs(tools),
                "max_tokens": max_tokens,
                **create_kwargs,
            }
            if round_index == 0 and force_tool is not None:
                params = forced_request(endpoint, params, by_name[force_tool])
            elif force_tool is not None:
                params = get_engine(endpoint.engine).after_forced_call(params)
            with endpoint_errors(endpoint):
                response = sdk.chat.completions.create(**params)
            result.rounds += 1
            result.cache.append(cache_stats(response))
            choice = response.choices[0]
            message = choice.message
            result.finish_reason = choice.finish_reason
            if not message.tool_calls:
                result.answer = message.content or ""
                conversation.append({"role": "assistant", "content": result.answer})
                return result
            conversation.append(_assistant_message(message))
            for call in message.tool_calls:
                record = _execute(call, by_name, runner)
                result.calls.append(record)
                conversation.append({"role": "tool", "tool_call_id": call.id, "content": record.result})
        return result


def _assistant_message(message: Any) -> dict[str, Any]:
    """The assistant turn as the next request must repeat it (tool calls included)."""
    return {
        "role": "assistant",
        "content": message.content or "",
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ],
    }


def _execute(call: Any, tools: dict[str, Tool], runner: ToolRunner) -> ToolCallRecord:
    name, arguments = call.function.name, call.function.arguments or "{}"
    if name not in tools:
        return ToolCallRecord(
            name,
            arguments,
            False,
            f"error: there is no tool named {name!r}; the tools are: {', '.join(tools)}",
        )
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        return ToolCallRecord(name, arguments, False, f"error: the arguments are not valid JSON ({exc})")
    if not isinstance(parsed, dict):
        return ToolCallRecord(name, arguments, False, "error: the arguments must be a JSON object")
    try:
        checked = tools[name].check_arguments(parsed)
    except ToolArgumentsError as exc:
        return ToolCallRecord(name, arguments, False, str(exc))
    outcome = runner.run(tools[name], checked)
    return ToolCallRecord(name, arguments, outcome.ok, outcome.content)


# --- forcing the first call ---------------------------------------------------------------------------------


def forced_request(endpoint: Endpoint, params: dict[str, Any], tool: Tool) -> dict[str, Any]:
    """``params`` changed so that the model's first move is a call to ``tool`` (see the module docstring)."""
    return get_engine(endpoint.engine).force_tool_call(
        params, tool.name, tool_specs([tool]), lambda text: special_tokens(endpoint, text)
    )


def special_tokens(endpoint: Endpoint, text: str) -> list[Any]:
    """``text`` as this model's tokens, special tokens (``<tool_call>``...) parsed as such."""
    call = get_engine(endpoint.engine).tokenize_call(text, parse_special=True)
    if call is None:
        hint = "Let the model choose its tool (no forced call)."
        raise CapabilityError("Tokenizing", endpoint.engine, hint=hint)
    answer = post_json(endpoint, call.path, call.body, timeout=30)
    return list(answer.get("tokens") or [])
