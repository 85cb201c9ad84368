"""``/v1/chat/completions`` in the stand-in: the reply a prompt gets, and its JSON and stream shapes."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .sglang_checks import checked_answer, checked_request
from .sglang_protocol import openai_models
from .sglang_state import (
    ANSWER_WORDS,
    EOS_ID,
    REASONING_WORDS,
    BadRequest,
    Handler,
    Reply,
    ServerConfig,
    ServerState,
    error_response,
    json_body,
    sse,
    start_stream,
)
from .sglang_text import (
    GrammarError,
    babble,
    constraint_sample,
    json_schema_sample,
    seeded,
    tokenize,
    truncate,
)

# --- /v1/chat/completions -----------------------------------------------------------------------------------

_GENERIC_NAME_PARTS = {"get", "set", "list", "fetch", "find", "search", "lookup", "call", "make", "create"}


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def render_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """The chat template: no shared preamble, so unrelated prompts share no cached prefix."""
    parts = [f"<|{m['role']}|>{_text_of(m.get('content'))}" for m in messages]
    if tools:
        parts.append("<|tools|>" + json.dumps([t.get("function", t) for t in tools]))
    return "\n".join(parts) + "\n<|assistant|>"


def _constraint(body: dict[str, Any]) -> tuple[str, Any] | None:
    found = [(kind, body[kind]) for kind in ("regex", "ebnf") if body.get(kind) is not None]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        found.append(("json", (fmt.get("json_schema") or {}).get("schema", {})))
    elif fmt.get("type") == "json_object":
        found.append(("json", {"type": "object", "properties": {"answer": {"type": "string"}}}))
    if len(found) > 1:
        raise BadRequest("Only one of regex, json_schema, or ebnf can be set.")
    return found[0] if found else None


def _tool_to_call(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = [t.get("function", t) for t in body.get("tools") or []]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        named = [tool for tool in tools if tool.get("name") == wanted]
        if not named:
            raise BadRequest(f"Tool '{wanted}' not found in 'tools'.")
        return named[0]
    user = _last_user_text(messages).lower()
    for tool in tools:
        name = tool.get("name", "").lower()
        parts = [p for p in re.split(r"[_\W]+", name) if len(p) >= 4 and p not in _GENERIC_NAME_PARTS]
        if name in user or any(part in user for part in parts):
            return tool
    return tools[0] if choice == "required" else None


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return _text_of(next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""))


def _proper_nouns(messages: list[dict[str, Any]]) -> list[str]:
    """Capitalised words of the last user message past its first word: plausible string arguments."""
    user = _last_user_text(messages)
    return [word.strip(".,!?;:'\"") for word in user.split()[1:] if word[:1].isupper()]


def compose_reply(config: ServerConfig, body: dict[str, Any], prompt_tokens: list[str]) -> Reply:
    messages = body["messages"]
    rng = seeded(prompt_tokens, body.get("temperature"), body.get("seed"))
    kwargs = body.get("chat_template_kwargs") or {}
    thinking = (
        config.reasoning_parser is not None
        and kwargs.get("enable_thinking", True) is not False
        and kwargs.get("thinking", True) is not False
    )
    reasoning = babble(rng, REASONING_WORDS[body.get("reasoning_effort") or "medium"]) if thinking else ""
    tool = _tool_to_call(body, messages)
    tool_calls: list[dict[str, Any]] | None = None
    content: str | None
    if tool is not None:
        parameters = tool.get("parameters") or {"type": "object"}
        arguments = json_schema_sample(parameters, rng, _proper_nouns(messages))
        if config.tool_call_parser:
            tool_calls = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "index": 0,
                    "function": {"name": tool["name"], "arguments": arguments},
                }
            ]
            content = None
        else:  # without a parser the call stays raw text in content
            content = json.dumps({"name": tool["name"], "arguments": json.loads(arguments)})
    elif (constraint := _constraint(body)) is not None:
        content = constraint_sample(constraint[0], constraint[1], rng, _proper_nouns(messages))
    elif messages[-1].get("role") == "tool":
        content = f"{_text_of(messages[-1].get('content'))}. " + babble(rng, ANSWER_WORDS // 2)
    else:
        content = babble(rng, ANSWER_WORDS)

    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    budget = budget or config.context_len - len(prompt_tokens)
    finish, matched = ("tool_calls", None) if tool_calls else ("stop", EOS_ID)
    if len(tokenize(reasoning)) >= budget:
        reasoning, content, tool_calls = truncate(reasoning, budget), None, None
        finish, matched = "length", None
    elif content is not None:
        room = budget - len(tokenize(reasoning))
        stop = body.get("stop")
        for word in [stop] if isinstance(stop, str) else stop or []:
            if word and word in content:
                content, finish, matched = content[: content.index(word)], "stop", word
        if len(tokenize(content)) > room:
            content, finish, matched = truncate(content, room), "length", None
    if thinking and body.get("separate_reasoning") is False:
        content, reasoning = reasoning + (content or ""), ""
    return Reply(reasoning or None, content, tool_calls, finish, matched)


def _usage(config: ServerConfig, prompt: int, cached: int, reply: Reply) -> dict[str, Any]:
    details = {"cached_tokens": cached} if config.enable_cache_report and cached > 0 else None
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + reply.completion_tokens,
        "completion_tokens": reply.completion_tokens,
        "prompt_tokens_details": details,
        "reasoning_tokens": reply.reasoning_tokens,
    }


@dataclass
class ChatAnswer:
    """One chat request answered: what the JSON body or the stream is made from."""

    rid: str
    model: str
    reply: Reply
    usage: dict[str, Any]
    created: int = field(default_factory=lambda: int(time.time()))


def answer_chat(state: ServerState, body: dict[str, Any]) -> ChatAnswer:
    """The reply to a request SGLang's ``ChatCompletionRequest`` accepted (BadRequest / GrammarError for what
    its serving code refuses)."""
    config = state.config
    if not body["messages"]:
        raise BadRequest("Messages cannot be empty.")
    prompt_tokens = tokenize(render_prompt(body["messages"], body.get("tools")))
    if len(prompt_tokens) >= config.context_len:
        raise BadRequest(
            f"The input ({len(prompt_tokens)} tokens) is longer than the model's context length "
            f"({config.context_len} tokens)."
        )
    reply = compose_reply(config, body, prompt_tokens)
    cached = state.cache.match_and_insert(prompt_tokens)
    state.metrics.record(len(prompt_tokens), reply.completion_tokens, cached)
    usage = _usage(config, len(prompt_tokens), cached, reply)
    return ChatAnswer(uuid.uuid4().hex, body.get("model") or config.name, reply, usage)


def chat_json(answer: ChatAnswer) -> dict[str, Any]:
    reply = answer.reply
    message = {
        "role": "assistant",
        "content": reply.content,
        "reasoning_content": reply.reasoning,
        "tool_calls": reply.tool_calls,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": reply.finish_reason,
        "matched_stop": reply.matched_stop,
    }
    data = {
        "id": answer.rid,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [choice],
        "usage": answer.usage,
        "metadata": {"weight_version": "default"},
    }
    return checked_answer(openai_models().ChatCompletionResponse, data)


async def chat_chunks(answer: ChatAnswer, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """The stream's chunks, each one checked by SGLang's ``ChatCompletionStreamResponse``."""
    reply = answer.reply
    model = openai_models().ChatCompletionStreamResponse

    def chunk(delta: dict[str, Any], finish: str | None = None, matched: Any = None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
            "matched_stop": matched,
        }
        return {
            "id": answer.rid,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": [choice],
            "usage": None,
        }

    async for delta in _deltas(reply):
        yield checked_answer(model, chunk(delta))
    yield checked_answer(model, chunk({"reasoning_content": None}, reply.finish_reason, reply.matched_stop))
    if include_usage:
        usage_chunk = {
            "id": answer.rid,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": [],
            "usage": answer.usage,
        }
        yield checked_answer(model, usage_chunk)


def chat_route(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        stream = False
        try:
            body = await json_body(request)
            checked_request(openai_models().ChatCompletionRequest, body)
            stream = bool(body.get("stream"))
            answer = answer_chat(state, body)
        except (BadRequest, GrammarError) as e:
            kind = e.kind if isinstance(e, BadRequest) else "BadRequestError"
            if stream and kind == "BadRequestError":  # a started stream reports errors as a chunk
                return await _stream_error(request, str(e))
            return error_response(str(e), kind)
        if not stream:
            return web.json_response(chat_json(answer))
        response = await start_stream(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        async for chunk in chat_chunks(answer, include_usage):
            await response.write(sse(chunk))
        await response.write(b"data: [DONE]\n\n")
        return response

    return handler


async def _stream_error(request: web.Request, message: str) -> web.StreamResponse:
    response = await start_stream(request)
    error = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    await response.write(sse({"error": error}))
    await response.write(b"data: [DONE]\n\n")
    return response


async def _deltas(reply: Reply) -> AsyncIterator[dict[str, Any]]:
    """Deltas shaped as SGLang 0.5.12 writes them. Text chunks come from ``sse_utils.StreamDelta`` (msgspec,
    omit_defaults): ``reasoning_content`` has no default there, so it is ALWAYS sent (null or text), because
    the OpenAI SDK's ``ChoiceDelta`` only has the attribute when the key is present; ``role`` and ``content``
    are left out when None. Tool-call chunks are pydantic ``DeltaMessage`` dumps: every key present."""
    yield {"reasoning_content": None, "role": "assistant", "content": ""}
    for field_name, text in (("reasoning_content", reply.reasoning), ("content", reply.content)):
        pieces = tokenize(text or "")
        for i in range(0, len(pieces), 4):
            yield {"reasoning_content": None, field_name: "".join(pieces[i : i + 4])}
            await asyncio.sleep(0)
    for call in reply.tool_calls or []:
        function = call["function"]
        empty = {"role": None, "content": None, "reasoning_content": None}
        yield {
            **empty,
            "tool_calls": [
                {
                    "id": call["id"],
                    "index": 0,
                    "type": "function",
                    "function": {"name": function["name"], "arguments": ""},
                }
            ],
        }
        yield {
            **empty,
            "tool_calls": [
                {
                    "id": None,
                    "index": 0,
                    "type": "function",
                    "function": {"name": None, "arguments": function["arguments"]},
                }
            ],
        }
