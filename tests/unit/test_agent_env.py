"""`sandserve env --for CLIENT`: what each client gets in each auth mode, and that a shell reads it back."""

from __future__ import annotations

import shlex

import pytest

from sandserve.cli.agent_env import client_lines
from sandserve.client.agent_env import CLIENTS, client_settings
from sandserve.endpoint import Endpoint
from sandserve.errors import SandserveError
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER

URL = "https://8000-abc.proxy.daytona.works"


def endpoint(auth: str, engine: str = "sglang") -> Endpoint:
    headers = {PREVIEW_TOKEN_HEADER: "tok-123"} if auth == "token" else {}
    api_key = "sk-key" if auth == "key" else None
    token_header = PREVIEW_TOKEN_HEADER if headers else None
    return Endpoint(
        "e1",
        URL,
        "gpt-oss-20b",
        engine=engine,
        auth=auth,
        headers=headers,
        api_key=api_key,
        token_header=token_header,
    )


def exported(lines: list[str]) -> dict[str, str]:
    """What `eval` of the lines sets (comments are skipped by the shell too)."""
    values = {}
    for line in lines:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return values


def test_claude_code_gets_the_token_as_a_custom_header_and_a_key_as_a_bearer_token() -> None:
    token = exported(client_lines(endpoint("token"), "claude-code"))
    assert token["ANTHROPIC_BASE_URL"] == URL and token["ANTHROPIC_MODEL"] == "gpt-oss-20b"
    assert token["ANTHROPIC_CUSTOM_HEADERS"] == f"{PREVIEW_TOKEN_HEADER}: tok-123"
    key = exported(client_lines(endpoint("key"), "claude-code"))
    assert key["ANTHROPIC_AUTH_TOKEN"] == "sk-key" and "ANTHROPIC_CUSTOM_HEADERS" not in key
    assert "ANTHROPIC_API_KEY" not in key  # Claude Code sends that as x-api-key, which SGLang never reads


def test_codex_gets_its_config_file_lines_and_chat_where_responses_take_no_tools() -> None:
    on_sglang = client_settings(endpoint("token"), "codex")
    assert on_sglang.config_path == "~/.codex/config.toml"
    assert 'wire_api = "chat"' in on_sglang.config and on_sglang.notes
    assert f'env_http_headers = {{ "{PREVIEW_TOKEN_HEADER}" = "TOKEN" }}' in on_sglang.config
    assert on_sglang.exports == {"TOKEN": "tok-123"}
    local = client_settings(endpoint("key", engine="llamacpp"), "codex")
    assert 'wire_api = "responses"' in local.config and 'env_key = "SANDSERVE_API_KEY"' in local.config
    lines = client_lines(endpoint("key", engine="llamacpp"), "codex")
    assert all(line.startswith(("export ", "#")) for line in lines)


@pytest.mark.parametrize("client", ["openai", "anthropic", "litellm"])
def test_sdks_get_variables_and_a_note_where_the_token_needs_code(client: str) -> None:
    token = client_settings(endpoint("token"), client)
    assert token.exports["TOKEN"] == "tok-123" and PREVIEW_TOKEN_HEADER in token.notes[0]
    assert "--auth key" in token.notes[0]
    public = client_settings(endpoint("public"), client)
    assert not public.notes and "TOKEN" not in public.exports
    key = exported(client_lines(endpoint("key"), client))
    assert "sk-key" in key.values()


def test_each_sdk_reads_its_own_variables() -> None:
    assert exported(client_lines(endpoint("key"), "openai")) == {
        "OPENAI_BASE_URL": f"{URL}/v1",
        "OPENAI_API_KEY": "sk-key",
        "MODEL": "gpt-oss-20b",
    }
    assert exported(client_lines(endpoint("public"), "anthropic")) == {
        "ANTHROPIC_BASE_URL": URL,
        "MODEL": "gpt-oss-20b",
        "ANTHROPIC_API_KEY": "EMPTY",
    }
    assert exported(client_lines(endpoint("public"), "litellm"))["MODEL"] == "openai/gpt-oss-20b"


def test_a_model_name_with_spaces_survives_the_shell() -> None:
    odd = Endpoint("e2", URL, "My Model (q4)", auth="public")
    for client in CLIENTS:
        for line in client_lines(odd, client):
            if line.startswith("export "):
                shlex.split(line)  # quoted: no shell syntax error


def test_an_unknown_client_is_named_with_the_choices() -> None:
    with pytest.raises(SandserveError, match="claude-code"):
        client_settings(endpoint("public"), "cursor")
