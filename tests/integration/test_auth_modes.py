"""Every auth mode of a Daytona endpoint, through `connect()`, with all three clients (OpenAI SDK sync and
async, LiteLLM) and curl (examples/query.sh). The endpoint is brought up by `sandserve.serve.lifecycle.up`
with the Daytona provider on the Daytona stand-in (the real SDK; a preview proxy enforcing token / signed URL
/ public), serving an SGLang model with the SGLang stand-in inside a stand-in sandbox, as the stock SGLang
image would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import as_typed, parse_exports, sandserve_command, sglang_daytona_standin
from standins.daytona_api import DaytonaStandin

from sandserve.client.chat import ChatOptions
from sandserve.client.connect import connect
from sandserve.client.transport import endpoint_errors
from sandserve.endpoint import Endpoint
from sandserve.errors import EndpointUnavailableError
from sandserve.providers.daytona import DaytonaProvider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.local import free_port
from sandserve.serve import lifecycle
from sandserve.serve.resolve import resolve_spec

#: An SGLang preset without reasoning: a 4-token answer is content, not the start of a reasoning block.
MODEL = "qwen3-coder-30b"
QUERY_SH = Path(__file__).parents[2] / "examples" / "query.sh"
MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def daytona(monkeypatch: pytest.MonkeyPatch) -> Iterator[DaytonaStandin]:
    with sglang_daytona_standin() as api:
        monkeypatch.setenv("DAYTONA_API_KEY", api.api_key)
        monkeypatch.setenv("DAYTONA_API_URL", api.url)
        monkeypatch.setattr(DaytonaProvider, "poll_interval", 0.2)
        yield api


def bring_up(auth: str) -> Endpoint:
    spec = resolve_spec(MODEL, provider="daytona", auth=auth, port=free_port(), boot_timeout=60)
    return lifecycle.up(spec)


def query_sh(endpoint: Endpoint) -> subprocess.CompletedProcess[str]:
    """examples/query.sh with what `sandserve env` exports for this endpoint."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOKEN", "OPENAI_API_KEY", "MODEL")}
    env.update(parse_exports(endpoint.export_lines()))
    env["MAX_TOKENS"] = "4"
    return subprocess.run(["bash", str(QUERY_SH), "Hi"], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("auth", ["token", "signed", "key", "public"])
def test_every_client_works_in_every_auth_mode(daytona, litellm, auth):
    up = bring_up(auth)
    endpoint = connect(up.id)
    assert (endpoint.provider, endpoint.auth, endpoint.engine) == ("daytona", auth, "sglang")
    assert (PREVIEW_TOKEN_HEADER in endpoint.headers) == (auth == "token")
    assert bool(endpoint.api_key) == (auth == "key")

    with endpoint.openai() as client:
        reply = client.chat.completions.create(model=endpoint.model, messages=MESSAGES, max_tokens=4)
    assert reply.choices[0].message.content

    async def async_reply() -> str:
        async with endpoint.async_openai() as client:
            response = await client.chat.completions.create(
                model=endpoint.model, messages=MESSAGES, max_tokens=4
            )
            return response.choices[0].message.content

    assert asyncio.run(async_reply())

    response = litellm.completion(**endpoint.litellm_kwargs(), messages=MESSAGES, max_tokens=4)
    assert response.choices[0].message.content

    color = endpoint.generate("The best color is", regex=" (red|blue)", max_new_tokens=4)
    assert color.text in (" red", " blue")

    curl = query_sh(endpoint)
    assert curl.returncode == 0, curl.stderr + curl.stdout
    assert json.loads(curl.stdout)["choices"][0]["message"]["content"]


def test_a_wrong_token_fails_clearly_in_every_client(daytona, litellm, monkeypatch):
    up = bring_up("token")
    wrong = Endpoint(
        id=up.id,
        url=up.url,
        model=up.model,
        engine=up.engine,
        headers={PREVIEW_TOKEN_HEADER: "expired-or-wrong"},
    )
    from sandserve.client.chat import ask

    with pytest.raises(EndpointUnavailableError, match="refused the credentials") as caught:
        ask(wrong, "Hi")
    assert "sandserve status" in str(caught.value)
    with pytest.raises(EndpointUnavailableError, match="401"):
        wrong.generate("Hi")
    with pytest.raises(EndpointUnavailableError, match="401"), endpoint_errors(wrong):  # any client, wrapped
        litellm.completion(**wrong.litellm_kwargs(), messages=MESSAGES, max_tokens=2)

    monkeypatch.setenv("ENDPOINT", up.url)
    monkeypatch.setenv("TOKEN", "expired-or-wrong")
    with pytest.raises(EndpointUnavailableError, match="401"):
        connect()
    result = subprocess.run(
        [*sandserve_command(), "chat", "Hi"], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert (
        result.returncode != 0
        and "sandserve status" in as_typed(result.stderr)
        and "Traceback" not in result.stderr
    )

    monkeypatch.setenv("TOKEN", up.headers[PREVIEW_TOKEN_HEADER])
    assert connect().engine == "sglang"  # the right token, from the environment, works


def test_an_expired_signed_url_fails_clearly(daytona):
    from daytona import Daytona, DaytonaConfig

    from sandserve.client.chat import ask

    up = bring_up("signed")
    endpoint = connect(up.id)
    assert ask(endpoint, "Hi", ChatOptions(max_tokens=2)).content
    port, token = endpoint.url.rsplit("/", 1)[1].split("-", 1)
    sandbox = Daytona(DaytonaConfig(api_key=daytona.api_key, api_url=daytona.url)).get(up.sandbox_id)
    sandbox.expire_signed_preview_url(int(port), token)

    with pytest.raises(EndpointUnavailableError, match="expired") as caught:
        ask(endpoint, "Hi")
    assert "sandserve status" in str(caught.value)
    result = subprocess.run(
        [*sandserve_command(), "chat", "Hi", "-e", up.id],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode != 0 and "sandserve status" in as_typed(result.stderr)
