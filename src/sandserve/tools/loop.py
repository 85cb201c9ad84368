"""The standard OpenAI tool-calling loop: the model asks for calls, they run isolated, their results go back,
until the model answers without asking for more.

Forcing the first call (``force_tool="get_weather"``) is for models that will not pick a tool by themselves,
such as the tiny random-weight model. It changes only the first request:
- SGLang: ``tool_choice={"type": "function", "function": {"name": ...}}`` (SGLang constrains the call).
- llama.cpp: ``tool_choice`` forces nothing there (free text may come first), so the recipe is:
  a ``logit_bias`` of +100 on the template's ``<tool_call>`` token (its id from ``/tokenize``); the same
  ``presence_penalty``, so the token is neutral once emitted (otherwise the bias floods every JSON string with
  it); -100 on ``</tool_call>``, so it cannot appear inside a string and end the call early through the stop
  string; ``stop: ["</tool_call>"]``; ``parallel_tool_calls: false``; at least 256 tokens; and, in that
  request's tool schemas, free string arguments (no pattern, enum or format) limited to plain ASCII
  (``FORCED_STRING_CHARS``), 48 characters unless maxLength says otherwise. A random model almost never ends a
  string by itself, and its byte-level tokens can leave broken UTF-8 in one, which llama.cpp's grammar lets
  through but its tool-call parser then rejects with a 500. The arguments are schema-valid, not meaningful.
  The requests after the forced call send ``tool_choice: "none"``: the model answers from the result.
A tool's error (bad arguments, a crash, a limit) goes back to the model as the tool message, as loops expect.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandserve.client.transport import endpoint_errors, post_json
from sandserve.client.usage import CacheStats, cache_stats
from sandserve.errors import CapabilityError, ConfigError
from sandserve.tools.declaration import Tool, ToolArgumentsError, tool_specs

if TYPE_CHECKING:
    import openai

    from sandserve.endpoint import Endpoint
    from sandserve.tools.sandboxes import ToolRunner

TOOL_CALL_TOKEN = "<tool_call>"
TOOL_CALL_END_TOKEN = "</tool_call>"
FORCING_BIAS = 100
FORCED_MIN_TOKENS = 256
#: No quote or backslash (the grammar puts pattern characters into the JSON string raw), ASCII only.
FORCED_STRING_CHARS = "[A-Za-z0-9 ,.:;!?'()/-]"
FORCED_STRING_MAX_LENGTH = 48


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
    by_name = {t.name: t for t in tools}
    if force_tool is not None and force_tool not in by_name:
        raise ConfigError(
            f"force_tool={force_tool!r} is not one of the tools offered ({', '.join(by_name)}).",
            hint="Name one of the tools passed in `tools`.",
        )
    client = client or endpoint.openai()
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
        elif force_tool is not None and endpoint.engine == "llamacpp":
            # A model that had to be forced would only stumble into another call (and a random one writes
            # arguments that run past max_tokens, which llama.cpp answers with a 500): ask for the answer.
            params["tool_choice"] = "none"
        with endpoint_errors(endpoint):
            response = client.chat.completions.create(**params)
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
    if endpoint.engine != "llamacpp":
        return {**params, "tool_choice": {"type": "function", "function": {"name": tool.name}}}
    start, end = special_token_id(endpoint, TOOL_CALL_TOKEN), special_token_id(endpoint, TOOL_CALL_END_TOKEN)
    extra = dict(params.get("extra_body") or {})
    extra["chat_template_kwargs"] = {**extra.get("chat_template_kwargs", {}), "enable_thinking": False}
    return {
        **params,
        "tools": [_bounded_strings(spec) for spec in tool_specs([tool])],
        "logit_bias": {str(start): FORCING_BIAS, str(end): -FORCING_BIAS},
        "presence_penalty": FORCING_BIAS,
        "stop": [TOOL_CALL_END_TOKEN],
        "parallel_tool_calls": False,
        "max_tokens": max(int(params.get("max_tokens") or 0), FORCED_MIN_TOKENS),
        "extra_body": extra,
    }


def special_token_id(endpoint: Endpoint, text: str) -> int:
    """The id of ``text`` as one token of this llama.cpp model's vocabulary (``<tool_call>``...)."""
    answer = post_json(endpoint, "/tokenize", {"content": text, "parse_special": True}, timeout=30)
    tokens = answer.get("tokens") or []
    if len(tokens) != 1:
        raise CapabilityError(
            "Forcing a tool call",
            endpoint.engine,
            hint="The recipe needs a chat template whose calls are wrapped in the single tokens "
            f"{TOOL_CALL_TOKEN} and {TOOL_CALL_END_TOKEN} (Hermes/Qwen style); this model's are not. "
            "Serve with SGLang, where tool_choice forces the call.",
        )
    token = tokens[0]
    return int(token["id"] if isinstance(token, dict) else token)


def _bounded_strings(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    _cap_strings(spec["function"]["parameters"])
    return spec


def _cap_strings(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    free_string = schema.get("type") == "string" and not {"enum", "const", "pattern", "format"} & set(schema)
    if free_string:
        low = int(schema.pop("minLength", 0))
        high = max(low, int(schema.pop("maxLength", FORCED_STRING_MAX_LENGTH)))
        schema["pattern"] = f"^{FORCED_STRING_CHARS}{{{low},{high}}}$"
    for child in (schema.get("properties") or {}).values():
        _cap_strings(child)
    for key in ("items", "additionalProperties"):
        _cap_strings(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf"):
        for child in schema.get(key) or []:
            _cap_strings(child)
