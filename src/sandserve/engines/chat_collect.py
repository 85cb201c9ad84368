"""A chat completion asked for whole, fetched from llama-server as a stream and put back together.

Why: llama-server notices that a client has gone only between the results it sends that client. A
non-streamed request gets one result, at the end, so closing its connection stops nothing: the slot keeps
generating until the answer is done (its HTTP thread wakes each time any request gets a result and waits a
further second, so the one-second check for a closed connection never comes while others are served). A
streamed request gets a result per token and is cancelled at the next one. The adapter sends the requests it
may preempt as streams, so that closing the connection frees their slot, and answers their client with the
same ``chat.completion`` that llama-server would have sent (``to_json_oaicompat_chat`` in its
server-task.cpp, the message as ``common_chat_msg::to_json_oaicompat`` writes it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

#: What a request that llama-server is to stream carries: its usage comes in the last chunk, and a progress
#: chunk after each step of its prompt, so that it is also cancelled while its prompt is being read.
STREAM_FIELDS: dict[str, Any] = {
    "stream": True,
    "stream_options": {"include_usage": True},
    "return_progress": True,
}


def can_collect(body: Any) -> bool:
    """A chat request asked for whole, with one choice: the shapes put back together here."""
    return (
        isinstance(body, dict)
        and not body.get("stream")
        and body.get("n") in (None, 1)
        and isinstance(body.get("messages"), list)
    )


def as_stream(body: dict[str, Any]) -> bytes:
    return json.dumps({**body, **STREAM_FIELDS}).encode()


@dataclass
class _Call:
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass
class ChatCollector:
    """Deltas in, one ``chat.completion`` out."""

    head: dict[str, Any] = field(default_factory=dict)
    role: str = "assistant"
    content: str = ""
    reasoning: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)
    logprobs: list[Any] | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("error"), dict):
            self.error = chunk["error"]
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in chunk:
                self.head[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                self.logprobs = (self.logprobs or []) + logprobs["content"]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._add_delta(delta)

    def _add_delta(self, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        if isinstance(delta.get("content"), str):
            self.content += delta["content"]
        if isinstance(delta.get("reasoning_content"), str):
            self.reasoning += delta["reasoning_content"]
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            mine = self.calls.setdefault(int(call.get("index") or 0), _Call())
            if call.get("id"):
                mine.id = call["id"]
            function = call.get("function") or {}
            mine.name += function.get("name") or ""
            mine.arguments += function.get("arguments") or ""

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.calls:
            message["tool_calls"] = [
                {
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                    **({"id": call.id} if call.id else {}),
                }
                for _, call in sorted(self.calls.items())
            ]
        return message

    def completion(self) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "finish_reason": self.finish_reason or "length",
            "index": 0,
            "message": self.message(),
        }
        if self.logprobs:
            choice["logprobs"] = {"content": self.logprobs}
        answer: dict[str, Any] = {
            "choices": [choice],
            "created": self.head.get("created"),
            "model": self.head.get("model"),
            "system_fingerprint": self.head.get("system_fingerprint"),
            "object": "chat.completion",
            "usage": self.usage,
            "id": self.head.get("id"),
        }
        if self.timings is not None:
            answer["timings"] = self.timings
        return answer


async def collect_chat(lines: AsyncIterable[bytes]) -> tuple[int, dict[str, Any]]:
    """An SSE stream of ``chat.completion.chunk`` lines as (status, the answer llama-server would have sent
    whole). An error sent mid-stream becomes that error's answer, with its status (``code``)."""
    collector = ChatCollector()
    async for line in lines:
        if not line.startswith(b"data: {"):
            continue
        try:
            chunk = json.loads(line[len(b"data: ") :])
        except ValueError:
            continue
        if isinstance(chunk, dict):
            collector.add(chunk)
    if collector.error is not None:
        code = collector.error.get("code")
        return (code if isinstance(code, int) and 400 <= code < 600 else 500), {"error": collector.error}
    if collector.finish_reason is None:
        message = "llama-server's stream ended before its answer did"
        return 502, {"error": {"code": 502, "message": message, "type": "server_error"}}
    return 200, collector.completion()
