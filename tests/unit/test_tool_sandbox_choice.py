"""Which sandbox an endpoint's tool calls run in is its provider's answer, not a name compared outside
providers/: ask the provider by name, or, for an endpoint reached through ENDPOINT/TOKEN, the provider the
ledger knows its URL under, or else the one that recognises its URL or headers."""

from __future__ import annotations

import pytest

from sandserve.endpoint import Endpoint
from sandserve.providers import get_provider
from sandserve.providers.base import TOOLS_IN_A_DAYTONA_SANDBOX, TOOLS_ON_THIS_MACHINE, Provider
from sandserve.providers.daytona_headers import PREVIEW_TOKEN_HEADER
from sandserve.providers.handles import LocalHandle, SandboxHandle
from sandserve.providers.local import LocalProvider
from sandserve.serve.ledger import Registry, State
from sandserve.tools.sandboxes import DaytonaToolSandbox, tool_runner_for, tool_sandbox_kind


@pytest.mark.parametrize(
    ("provider", "kind"),
    [
        ("daytona", TOOLS_IN_A_DAYTONA_SANDBOX),
        ("local", TOOLS_ON_THIS_MACHINE),
        ("gateway", TOOLS_ON_THIS_MACHINE),
    ],
)
def test_a_served_endpoint_gets_its_providers_tool_sandbox(provider: str, kind: str) -> None:
    endpoint = Endpoint(id="e-1", url="http://127.0.0.1:1", model="m", provider=provider)
    assert tool_sandbox_kind(endpoint) == kind == get_provider(provider).tool_sandbox_kind


@pytest.mark.parametrize(
    ("variables", "kind"),
    [
        ({"ENDPOINT": "https://8000-abc.proxy.daytona.works", "TOKEN": "t"}, TOOLS_IN_A_DAYTONA_SANDBOX),
        ({"ENDPOINT": "https://8000-abc.daytona.app/x?sig=1"}, TOOLS_IN_A_DAYTONA_SANDBOX),
        ({"ENDPOINT": "https://models.example.com", "TOKEN": "t"}, TOOLS_IN_A_DAYTONA_SANDBOX),
        ({"ENDPOINT": "https://models.example.com"}, TOOLS_ON_THIS_MACHINE),
        ({"ENDPOINT": "http://127.0.0.1:1"}, TOOLS_ON_THIS_MACHINE),
    ],
)
def test_an_endpoint_from_the_environment_is_recognised_by_its_url_or_token(
    variables: dict[str, str], kind: str
) -> None:
    endpoint = Endpoint.from_env({**variables, "MODEL": "m"})
    assert endpoint is not None and endpoint.provider == "env"
    assert (PREVIEW_TOKEN_HEADER in endpoint.headers) == ("TOKEN" in variables)
    assert tool_sandbox_kind(endpoint) == kind


def _ledger_row(endpoint_id: str, provider: str, url: str) -> None:
    registry = Registry()
    registry.add(
        endpoint_id,
        provider=provider,
        engine="llamacpp",
        model="m",
        spec={},
        sandbox=SandboxHandle(provider, endpoint_id),
    )
    served = Endpoint(id=endpoint_id, url=url, model="m", provider=provider)
    registry.update(endpoint_id, state=State.READY, endpoint=served)


def test_the_ledger_says_whose_an_environment_endpoint_is_before_its_looks_do() -> None:
    # A key-mode Daytona endpoint carries no preview token, and its URL could be anyone's.
    _ledger_row("keyed", "daytona", "https://models.example.com/keyed")
    keyed = Endpoint.from_env({"ENDPOINT": "https://models.example.com/keyed", "MODEL": "m"})
    assert tool_sandbox_kind(keyed) == TOOLS_IN_A_DAYTONA_SANDBOX
    assert isinstance(tool_runner_for(keyed), DaytonaToolSandbox)  # nothing is created before a call

    # A URL the ledger knows as a local server's stays local, whatever headers come with it.
    _ledger_row("here", "local", "https://8000-abc.proxy.daytona.works")
    here = Endpoint.from_env({"ENDPOINT": "https://8000-abc.proxy.daytona.works", "TOKEN": "t", "MODEL": "m"})
    assert tool_sandbox_kind(here) == TOOLS_ON_THIS_MACHINE

    # The rows stand for nothing running: closed here, or the clean-up after the test would ask Daytona.
    for endpoint_id in ("keyed", "here"):
        Registry().update(endpoint_id, state=State.DOWN)


def test_a_new_provider_answers_for_itself() -> None:
    class Remote(LocalProvider):
        name = "remote-for-test"
        tool_sandbox_kind = TOOLS_IN_A_DAYTONA_SANDBOX

    try:
        assert isinstance(SandboxHandle("remote-for-test", "x"), LocalHandle)
        endpoint = Endpoint(id="e", url="http://127.0.0.1:1", model="m", provider="remote-for-test")
        assert tool_sandbox_kind(endpoint) == TOOLS_IN_A_DAYTONA_SANDBOX
    finally:
        del Provider.registered["remote-for-test"], SandboxHandle.handle_types["remote-for-test"]
        get_provider.cache_clear()
