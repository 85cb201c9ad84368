"""What the local adapter changes on the agent routes: a Responses JSON schema, and refusals in each API's
own error shape."""

from __future__ import annotations

import json

from sandserve.engines.agent_refusals import refusal
from sandserve.engines.auth_errors import auth_error_body
from sandserve.engines.llamacpp_agents import REQUEST_REWRITES, responses_body

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_a_responses_json_schema_becomes_the_response_format_llama_server_enforces() -> None:
    body = {"input": "Pick", "text": {"format": {"type": "json_schema", "name": "pick", "schema": SCHEMA}}}
    rewritten = json.loads(responses_body(json.dumps(body).encode()))
    assert rewritten["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "pick", "schema": SCHEMA},
    }
    assert rewritten["chat_template_kwargs"] == {"enable_thinking": False}
    assert rewritten["input"] == "Pick"  # the rest is left as it was
    assert REQUEST_REWRITES["/v1/responses"] is responses_body


def test_other_requests_pass_unchanged() -> None:
    for raw in (
        b'{"input": "Hi"}',
        b'{"input": "Hi", "text": {"format": {"type": "text"}}}',
        b'{"response_format": {"type": "json_object"}, "text": {"format": {"type": "json_object"}}}',
        b"not json",
        b"[1, 2]",
    ):
        assert responses_body(raw) == raw
    thinking = {"input": "x", "text": {"format": {"type": "json_object"}}, "chat_template_kwargs": {"a": 1}}
    kept = json.loads(responses_body(json.dumps(thinking).encode()))
    assert kept["response_format"] == {"type": "json_object"}
    assert kept["chat_template_kwargs"] == {"a": 1, "enable_thinking": False}


def test_refusals_come_in_each_apis_own_shape() -> None:
    openai_shaped = auth_error_body("key", sent=False)
    messages = refusal("/v1/messages", openai_shaped)
    assert messages.status == 401
    assert json.loads(messages.text or "") == {
        "type": "error",
        "error": {"type": "authentication_error", "message": openai_shaped["error"]["message"]},
    }
    for path in ("/v1/responses", "/v1/chat/completions"):  # OpenAI's shape is the Responses API's too
        answer = refusal(path, openai_shaped)
        assert answer.status == 401 and json.loads(answer.text or "") == openai_shaped
