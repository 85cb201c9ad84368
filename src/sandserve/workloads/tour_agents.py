"""The tour's agent-API steps: the OpenAI Responses API (what Codex and the Agents SDK speak) and Anthropic
Messages (what Claude Code speaks), each tried for real on the endpoint.

Messages go as plain HTTP with the endpoint's own headers, so the tour needs no Anthropic SDK. A route the
server (or a fleet's gateway) does not have is "unavailable" with the reason, never a failure; what an engine
leaves out of an API (SGLang 0.5.12.post1's Responses API takes no function tools and no JSON schema) is
said in the step's lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from sandserve.errors import CapabilityError, RequestRejectedError, SandserveError

if TYPE_CHECKING:
    from sandserve.endpoint import Endpoint

QUESTION = "Write a haiku about an agent that reads its own tool results."


def responses_lines(endpoint: Endpoint, max_tokens: int) -> tuple[bool, list[str], str]:
    """(passed, lines, note) of one ``/v1/responses`` request and one stream."""
    import openai

    try:
        with endpoint.openai(timeout=300, max_retries=0) as client:
            reply = client.responses.create(
                model=endpoint.model, input=QUESTION, max_output_tokens=max_tokens
            )
            events = [
                event.type
                for event in client.responses.create(
                    model=endpoint.model, input=QUESTION, max_output_tokens=max_tokens, stream=True
                )
            ]
    except openai.NotFoundError as exc:
        raise CapabilityError(
            "The Responses API (/v1/responses)", endpoint.engine, hint="This server has no such route."
        ) from exc
    except openai.APIStatusError as exc:
        raise _refused(exc.status_code, str(exc.message)) from exc
    kinds = [item.type for item in reply.output]
    lines = [
        f"asked: {QUESTION}",
        f"output items: {', '.join(kinds) or 'none'}; status {reply.status}",
        f"answer: {_short(reply.output_text)}",
        f"stream: {len(events)} events, {events[0] if events else '-'} .. {events[-1] if events else '-'}",
    ]
    caps = endpoint.capabilities()
    missing = [
        what
        for what, held in (
            ("function tools", caps.responses_tools),
            ("a JSON schema", caps.responses_json_schema),
        )
        if not held
    ]
    if missing:
        lines.append(f"this engine's Responses API takes no {' and no '.join(missing)} (chat completions do)")
    passed = reply.status == "completed" and bool(events) and events[-1] == "response.completed"
    note = f"{_count(len(kinds), 'output item')}, {_count(len(events), 'stream event')}"
    if missing:
        note += f"; no {', '.join(missing)}"
    return passed, lines, note


def messages_lines(endpoint: Endpoint, max_tokens: int) -> tuple[bool, list[str], str]:
    """(passed, lines, note) of one ``/v1/messages`` request and one ``count_tokens``."""
    body: dict[str, Any] = {
        "model": endpoint.model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    headers = {**endpoint.request_headers(), "anthropic-version": "2023-06-01"}
    with httpx.Client(timeout=300, headers=headers) as http:
        answer = http.post(f"{endpoint.url}/v1/messages", json=body)
        if answer.status_code == 404:
            raise CapabilityError(
                "Anthropic Messages (/v1/messages)",
                endpoint.engine,
                hint="A fleet routes them only behind smg: `sandserve fleet up --gateway smg`.",
            )
        if answer.status_code != 200:
            raise _refused(answer.status_code, answer.text[:300])
        message = answer.json()
        del body["max_tokens"]
        counted = http.post(f"{endpoint.url}/v1/messages/count_tokens", json=body)
    blocks = [block.get("type", "?") for block in message.get("content") or []]
    text = "".join(block.get("text") or "" for block in message.get("content") or [])
    usage = message.get("usage") or {}
    fresh, cached = int(usage.get("input_tokens") or 0), int(usage.get("cache_read_input_tokens") or 0)
    lines = [
        f"asked: {QUESTION}",
        f"content blocks: {', '.join(blocks) or 'none'}; stop_reason {message.get('stop_reason')}",
        f"answer: {_short(text)}",
        f"usage: {fresh + cached} in ({cached} from cache), {usage.get('output_tokens', 0)} out",
    ]
    if counted.status_code == 200:
        lines.append(f"count_tokens: {counted.json().get('input_tokens')} input tokens")
    passed = message.get("type") == "message" and message.get("stop_reason") is not None
    return passed, lines, f"{_count(len(blocks), 'content block')}, stop {message.get('stop_reason')}"


def _refused(status: int, message: str) -> SandserveError:
    if status < 500:
        return RequestRejectedError(status, message)
    return SandserveError(
        f"The server failed the request ({status}): {message}", hint="`sandserve logs` says why."
    )


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
