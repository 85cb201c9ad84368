"""What the local adapter changes on the agent routes: a Responses JSON schema, and refusals in each API's
own error shape."""

from __future__ import annotations

import json

from sandserve.engines.agent_refusals import agent_refusal
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
    messages = agent_refusal("/v1/messages", "no")
    assert messages is not None and messages.status == 401
    assert json.loads(messages.text or "") == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "no"},
    }
    responses = agent_refusal("/v1/responses/resp_1", "no")
    assert responses is not None and json.loads(responses.text or "")["error"]["code"] == "invalid_api_key"
    assert agent_refusal("/v1/chat/completions", "no") is None
