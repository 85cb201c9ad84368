"""The agent APIs of the SGLang stand-in: Anthropic Messages (``/v1/messages``, ``/v1/messages/count_tokens``)
and OpenAI Responses (``/v1/responses``, its retrieve and cancel), as SGLang 0.5.12.post1 serves them.

Messages run through SGLang's own ``AnthropicServing`` (its wheel's ``anthropic/serving.py``): its request
conversion to a chat completion, its answer conversion, and its event stream over the stand-in's chat stream,
so every byte of shape is SGLang's. Responses follow ``serving_responses.py`` (which needs SGLang's tokenizer
manager, so it is written out here) and are checked by its ``ResponsesRequest`` / ``ResponsesResponse`` and
the openai package's stream-event types, which SGLang builds its events from. What SGLang 0.5.12.post1 does
and the stand-in keeps:

* ``ResponsesRequest`` is built inside the route, outside FastAPI's validation, so a body its model refuses
  (a ``function`` tool: its ``tools`` take only ``web_search_preview`` / ``code_interpreter``) is an HTTP 500
  "Internal Server Error"; ``text`` (a JSON schema format) is not one of its fields and is ignored.
* usage is counted for gpt-oss (the harmony path) and all zeros for other models (the simple path reads
  ``meta_info`` as an attribute of a dict); a stream of a non-harmony model is ``response.created``,
  ``response.in_progress`` then ``response.completed`` with the whole output, no deltas.
* gpt-oss takes only ``tool_choice: "auto"`` (400 otherwise).

SGLang 0.5.12.post1 pins ``openai==2.6.1``; its protocol models are loaded here against the installed openai
(3.x), whose types are a superset, except the usage of ``response.completed``: 3.x added
``input_tokens_details.cache_write_tokens``, which SGLang does not send, so that one field is left unchecked.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from .sglang_chat import answer_chat, chat_chunks, chat_json, render_prompt
from .sglang_checks import checked_answer, checked_request
from .sglang_protocol import anthropic_models, anthropic_serving, openai_models
from .sglang_state import BadRequest, Handler, ServerState, error_response, json_body, start_stream
from .sglang_text import GrammarError, tokenize

# --- Anthropic Messages -----------------------------------------------------------------------------------


class _ChatStream:
    """What ``AnthropicServing`` calls for the chat stream it translates: the stand-in's own chunks."""

    def __init__(self, state: ServerState, body: dict[str, Any]) -> None:
        self.state, self.body = state, body

    async def _generate_chat_stream(self, *_: Any) -> AsyncIterator[str]:
        answer = answer_chat(self.state, self.body)
        async for chunk in chat_chunks(answer, include_usage=True):
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    models = anthropic_models()
    body = models.AnthropicErrorResponse(error=models.AnthropicError(type=kind, message=message))
    return web.json_response(body.model_dump(), status=status)


def _chat_body(serving: Any, request: Any) -> dict[str, Any]:
    """SGLang's conversion of an Anthropic request, as the chat body the stand-in answers."""
    chat_request = serving._convert_to_chat_completion_request(request)
    return chat_request.model_dump(exclude_none=True)


def messages_route(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = await json_body(request)
            parsed = checked_request(anthropic_models().AnthropicMessagesRequest, body)
        except BadRequest as e:  # FastAPI's body validation: SGLang's legacy error shape, not Anthropic's
            return error_response(str(e), e.kind)
        serving = anthropic_serving().AnthropicServing(None)
        try:
            chat_body = _chat_body(serving, parsed)
        except Exception as e:
            return _anthropic_error(400, "invalid_request_error", str(e))
        if parsed.stream:
            serving.openai_serving_chat = _ChatStream(state, chat_body)
            response = await start_stream(request)
            try:
                async for event in serving._generate_anthropic_stream(None, None, parsed, None):
                    await response.write(event.encode())
            except (BadRequest, GrammarError) as e:
                error = {"type": "error", "error": {"type": "invalid_request_error", "message": str(e)}}
                await response.write(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
            return response
        try:
            answer = answer_chat(state, chat_body)
        except (BadRequest, GrammarError) as e:
            return _anthropic_error(400, "invalid_request_error", str(e))
        chat = openai_models().ChatCompletionResponse.model_validate(chat_json(answer))
        converted = serving._convert_response(chat)
        return web.json_response(converted.model_dump(exclude_none=True))

    return handler


def count_tokens_route(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        models = anthropic_models()
        try:
            parsed = checked_request(models.AnthropicCountTokensRequest, await json_body(request))
        except BadRequest as e:
            return error_response(str(e), e.kind)
        serving = anthropic_serving().AnthropicServing(None)
        try:
            as_messages = models.AnthropicMessagesRequest(
                model=parsed.model,
                messages=parsed.messages,
                max_tokens=1,
                system=parsed.system,
                tools=parsed.tools,
                tool_choice=parsed.tool_choice,
            )
            chat_body = _chat_body(serving, as_messages)
        except Exception as e:
            return _anthropic_error(400, "invalid_request_error", str(e))
        count = len(tokenize(render_prompt(chat_body["messages"], chat_body.get("tools"))))
        return web.json_response(models.AnthropicCountTokensResponse(input_tokens=count).model_dump())

    return handler


# --- OpenAI Responses ---------------------------------------------------------------------------------------


@cache
def _events_adapter() -> TypeAdapter[Any]:
    """openai's stream-event types (imported on first use: a second and a half of the stand-in's boot)."""
    from openai.types.responses import ResponseStreamEvent

    return TypeAdapter(ResponseStreamEvent)


def is_harmony(model_path: str) -> bool:
    """SGLang serves gpt-oss (model_type gpt_oss) through openai-harmony, every other model the simple way."""
    return "gpt-oss" in model_path.lower()


def _responses_error(message: str, status: int = 400, param: str | None = None) -> web.Response:
    """``OpenAIServingResponses.create_error_response``: the nested envelope."""
    nested = {"message": message, "type": "invalid_request_error", "param": param, "code": status}
    return web.json_response({"error": nested}, status=status)


def _input_messages(parsed: Any, previous: dict[str, Any] | None, store: dict[str, Any]) -> list[dict]:
    """``_construct_input_messages``, SGLang's own quirk included: each earlier output becomes the system
    instructions again, not the earlier answer."""
    messages: list[dict[str, Any]] = []
    if parsed.instructions:
        messages.append({"role": "system", "content": parsed.instructions})
    if previous is not None:
        messages.extend(store["messages"][previous["id"]])
        for item in previous["output"]:
            if item.get("type") != "reasoning":
                for _ in item.get("content") or []:
                    messages.append({"role": "system", "content": parsed.instructions})
    if isinstance(parsed.input, str):
        messages.append({"role": "user", "content": parsed.input})
    else:
        messages.extend(dict(item) for item in parsed.input)
    return messages


def _as_chat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as the chat template reads them (an item with no role is a tool call or its output)."""
    chat = []
    for item in messages:
        role = item.get("role") or ("tool" if item.get("type") == "function_call_output" else "assistant")
        content = item.get("content", item.get("output", item.get("arguments", "")))
        chat.append({"role": role, "content": content if content is not None else ""})
    return chat


def _output_items(reasoning: str | None, content: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reasoning:
        items.append(
            {
                "id": f"rs_{uuid.uuid4().hex}",
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": reasoning}],
                "status": None,
            }
        )
    if content:
        text = {"type": "output_text", "text": content, "annotations": [], "logprobs": None}
        items.append(
            {
                "id": f"msg_{uuid.uuid4().hex}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [text],
            }
        )
    return items


def _response(parsed: Any, model: str, created: int, output: list, status: str, usage: Any) -> dict:
    """``ResponsesResponse.from_request`` dumped, checked by SGLang's model."""
    text_only = bool(output) and all(item["type"] == "message" for item in output)
    data = {
        "id": parsed.request_id,
        "object": "response",
        "created_at": created,
        "model": model,
        "output": output,
        "status": status,
        "usage": usage,
        "parallel_tool_calls": parsed.parallel_tool_calls or True,
        "tool_choice": parsed.tool_choice,
        "tools": [tool.model_dump() for tool in parsed.tools],
        "error": None,
        "incomplete_details": None,
        "instructions": parsed.instructions,
        "max_output_tokens": parsed.max_output_tokens,
        "previous_response_id": parsed.previous_response_id,
        "reasoning": {"effort": parsed.reasoning.effort if parsed.reasoning else None, "summary": None},
        "store": parsed.store,
        "temperature": parsed.temperature,
        "text": {"format": {"type": "text"}} if text_only else None,
        "top_p": parsed.top_p,
        "truncation": parsed.truncation,
        "user": parsed.user,
        "metadata": parsed.metadata or {},
    }
    return checked_answer(openai_models().ResponsesResponse, data)


def responses_route(state: ServerState, store: dict[str, Any]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = await json_body(request)
        except BadRequest as e:
            return _responses_error(str(e))
        if not isinstance(body, dict):
            return _responses_error(f"[{{'type': 'dict_type', 'loc': ('body',), 'input': {body!r}}}]")
        try:
            parsed = openai_models().ResponsesRequest(**body)
        except ValidationError:  # raised in the route itself: FastAPI's plain 500
            return web.Response(status=500, text="Internal Server Error")
        previous = None
        if (previous_id := parsed.previous_response_id) is not None:
            if not previous_id.startswith("resp_"):
                return _invalid_id(previous_id)
            if (previous := store["responses"].get(previous_id)) is None:
                return _not_found(previous_id)
        harmony = is_harmony(state.config.model_path)
        if harmony and parsed.tool_choice != "auto":
            return _responses_error("Only 'auto' tool_choice is supported in response API None")
        messages = _input_messages(parsed, previous, store)
        chat_body = {
            "messages": _as_chat(messages),
            "max_tokens": parsed.max_output_tokens,
            "temperature": parsed.temperature,
            "stop": parsed.stop,
        }
        if parsed.reasoning and parsed.reasoning.effort:
            chat_body["reasoning_effort"] = parsed.reasoning.effort
        try:
            answer = answer_chat(state, chat_body)
        except (BadRequest, GrammarError) as e:
            return _responses_error(str(e))
        reply, model, created = answer.reply, parsed.model or state.config.name, int(time.time())
        if harmony:
            cached = (answer.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            usage: dict[str, Any] = {
                "prompt_tokens": answer.usage["prompt_tokens"],
                "completion_tokens": answer.usage["completion_tokens"],
                "total_tokens": answer.usage["total_tokens"],
                "reasoning_tokens": reply.reasoning_tokens,
                "prompt_tokens_details": {"cached_tokens": cached} if cached else None,
            }
        else:
            usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "reasoning_tokens": 0}
        output = _output_items(reply.reasoning, reply.content)
        done = _response(parsed, model, created, output, "completed", usage)
        if parsed.store:
            store["messages"][parsed.request_id] = messages
            store["responses"][parsed.request_id] = done
        if parsed.background:
            return web.json_response(_response(parsed, model, created, [], "queued", None))
        if not parsed.stream:
            return web.json_response(done)
        response = await start_stream(request)
        started = _response(parsed, model, created, [], "in_progress", None)
        async for event in _events(started, done, harmony):
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        return response

    return handler


async def _events(started: dict, done: dict, harmony: bool) -> AsyncIterator[dict[str, Any]]:
    """``responses_stream_generator``'s events, numbered, each checked by the openai package's types."""
    sequence = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        data = {"type": kind, "sequence_number": sequence - 1, **fields}
        checked = data
        if kind == "response.completed":  # usage as SGLang's openai (2.6.1) knew it: no cache_write_tokens
            checked = {**data, "response": {**data["response"], "usage": None}}
        _events_adapter().validate_python(checked)
        return data

    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    messages = [item for item in done["output"] if item["type"] == "message"]
    if harmony and messages:  # the harmony parser streams the final channel's text
        item, index = messages[0], 1
        text = item["content"][0]["text"]
        added = {**item, "content": [], "status": "in_progress"}
        yield event("response.output_item.added", output_index=index, item=added)
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": None}
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        yield event("response.content_part.added", part=empty, **ids)
        pieces = tokenize(text)
        for start in range(0, len(pieces), 4):
            yield event(
                "response.output_text.delta", delta="".join(pieces[start : start + 4]), logprobs=[], **ids
            )
        yield event("response.output_text.done", text=text, logprobs=[], **ids)
        yield event("response.content_part.done", part=item["content"][0], **ids)
        yield event("response.output_item.done", output_index=index, item=item)
    usage = done["usage"] or {}
    completed = {
        **done,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "input_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)},
            "output_tokens": usage.get("completion_tokens", 0),
            "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
            "total_tokens": usage.get("total_tokens", 0),
        },
    }
    yield event("response.completed", response=completed)


def _invalid_id(response_id: str) -> web.Response:
    message = f"Invalid 'response_id': '{response_id}'. Expected an ID that begins with 'resp'."
    return _responses_error(message, param="response_id")


def _not_found(response_id: str) -> web.Response:
    return _responses_error(f"Response with id '{response_id}' not found.", 404, "response_id")


def retrieve_route(store: dict[str, Any]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response_id = request.match_info["response_id"]
        if not response_id.startswith("resp_"):
            return _invalid_id(response_id)
        found = store["responses"].get(response_id)
        return web.json_response(found) if found is not None else _not_found(response_id)

    return handler


def cancel_route(store: dict[str, Any]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response_id = request.match_info["response_id"]
        if not response_id.startswith("resp_"):
            return _invalid_id(response_id)
        found = store["responses"].get(response_id)
        if found is None:
            return _not_found(response_id)
        if found["status"] not in ("queued", "in_progress"):
            return _responses_error("Cannot cancel a synchronous response.")
        found["status"] = "cancelled"
        return web.json_response(found)

    return handler


def add_agent_routes(app: web.Application, state: ServerState) -> None:
    store: dict[str, Any] = {"responses": {}, "messages": {}}
    app.add_routes(
        [
            web.post("/v1/messages", messages_route(state)),
            web.post("/v1/messages/count_tokens", count_tokens_route(state)),
            web.post("/v1/responses", responses_route(state, store)),
            web.get("/v1/responses/{response_id}", retrieve_route(store)),
            web.post("/v1/responses/{response_id}/cancel", cancel_route(store)),
        ]
    )
