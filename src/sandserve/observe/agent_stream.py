"""The benchmark's requests on the agent APIs: the same prompts as a streamed Responses request or Anthropic
Messages request, read from their own event streams into the same timestamps and token counts.

- Responses: text is ``response.output_text.delta`` / ``response.reasoning_text.delta`` /
  ``response.function_call_arguments.delta``; usage comes with ``response.completed``. SGLang 0.5.12.post1
  streams no deltas for models it serves without harmony (only ``response.completed``, whose arrival is then
  the first text) and reports their usage as zeros: the report shows what the server said.
- Messages: text is ``content_block_delta``; input tokens (and cache reads) come with ``message_start`` and
  ``message_delta``, output tokens with ``message_delta``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from sandserve.observe.metrics import RequestRecord
from sandserve.observe.stream import ChunkReader, chat_body, read_chat_chunk

Api = Literal["chat", "responses", "messages"]
APIS: tuple[str, ...] = ("chat", "responses", "messages")
BodyBuilder = Callable[[str, list[dict[str, Any]], int, dict[str, Any]], bytes]

_RESPONSES_TEXT = (
    "response.output_text.delta",
    "response.reasoning_text.delta",
    "response.function_call_arguments.delta",
)


def _system_apart(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The system messages as one text (None: there are none), and the other messages: both APIs take the
    system prompt apart from the conversation."""
    system = [str(m["content"]) for m in messages if m.get("role") == "system"]
    return ("\n".join(system) if system else None), [m for m in messages if m.get("role") != "system"]


def responses_body(
    model: str, messages: list[dict[str, Any]], max_tokens: int, extra: dict[str, Any]
) -> bytes:
    """The chat prompt as Responses input: a system message becomes ``instructions``."""
    system, rest = _system_apart(messages)
    body = {"model": model, "input": rest, "max_output_tokens": max_tokens, "stream": True, **extra}
    if system is not None:
        body["instructions"] = system
    return json.dumps(body).encode()


def messages_body(
    model: str, messages: list[dict[str, Any]], max_tokens: int, extra: dict[str, Any]
) -> bytes:
    """The chat prompt as Anthropic Messages: a system message becomes ``system``."""
    system, rest = _system_apart(messages)
    body = {"model": model, "messages": rest, "max_tokens": max_tokens, "stream": True, **extra}
    if system is not None:
        body["system"] = system
    return json.dumps(body).encode()


def read_responses_event(event: dict[str, Any], record: RequestRecord, now: float) -> None:
    kind = event.get("type")
    if kind in _RESPONSES_TEXT and event.get("delta"):
        record.chunk_times.append(now)
    elif kind == "response.completed":
        response = event.get("response") or {}
        if not record.chunk_times and response.get("output"):
            record.chunk_times.append(now)  # a stream with no deltas: the whole output came now
        usage = response.get("usage") or {}
        record.prompt_tokens = int(usage.get("input_tokens") or 0)
        record.completion_tokens = int(usage.get("output_tokens") or 0)
        record.cached_tokens = int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0)


def read_messages_event(event: dict[str, Any], record: RequestRecord, now: float) -> None:
    kind = event.get("type")
    if kind == "content_block_delta":
        delta = event.get("delta") or {}
        if delta.get("text") or delta.get("partial_json") or delta.get("thinking"):
            record.chunk_times.append(now)
        return
    usage = (event.get("message") or {}).get("usage") if kind == "message_start" else event.get("usage")
    if kind not in ("message_start", "message_delta") or not isinstance(usage, dict):
        return
    # Anthropic's input_tokens leaves out the cached part: a prompt read whole from the cache has 0 of them.
    if "input_tokens" in usage:
        cached = int(usage.get("cache_read_input_tokens") or 0)
        record.prompt_tokens = int(usage["input_tokens"] or 0) + cached
        record.cached_tokens = cached
    if kind == "message_delta":
        record.completion_tokens = int(usage.get("output_tokens") or 0)
        record.prompt_tokens = record.prompt_tokens or 0


#: Per API: its route under the endpoint's URL, its request body, and its stream reader.
ROUTES: dict[str, tuple[str, BodyBuilder, ChunkReader]] = {
    "chat": ("/v1/chat/completions", chat_body, read_chat_chunk),
    "responses": ("/v1/responses", responses_body, read_responses_event),
    "messages": ("/v1/messages", messages_body, read_messages_event),
}
