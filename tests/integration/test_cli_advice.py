"""What the CLI advises runs as printed, against the real local engine: a hint pasted into a shell, a second
`up` of the same spec, an engine flag llama-server refuses, and the refusal a client without credentials
gets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from conftest import parse_exports

from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry
from sandserve.serve.resolve import resolve_spec

SCRIPT = Path(sys.executable).parent / "sandserve"


def run_as_typed(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The console script run by its path, with its folder not on PATH: as after `make`, unactivated."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != SCRIPT.parent)
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PATH": path},
        cwd=cwd,
    )


def test_a_printed_hint_runs_when_pasted_into_a_shell(llama_server, tmp_path):
    shown = run_as_typed("status", "nosuch")
    assert shown.returncode == 1
    commands = re.findall(r"`([^`]+)`", shown.stderr)
    assert commands and all(command.startswith(str(SCRIPT)) for command in commands), shown.stderr
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != SCRIPT.parent)
    for command in commands:
        if " up" in command:
            continue  # starting a server is not what this checks
        pasted = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": path},
        )
        assert pasted.returncode == 0, f"{command}: {pasted.stderr}"


def test_a_second_up_of_the_same_spec_hands_back_the_first(llama_server, tiny_model):
    first = run_as_typed("up", "--provider", "local", "--model", "tiny", "--quiet")
    assert first.returncode == 0, first.stderr
    again = run_as_typed("up", "--provider", "local", "--model", "tiny", "--quiet")
    assert again.returncode == 0, again.stderr
    assert parse_exports(again.stdout) == parse_exports(first.stdout)
    assert "already up" in again.stderr and "--new starts a second one" in again.stderr
    assert len(Registry().list()) == 1
    second = run_as_typed("up", "--provider", "local", "--model", "tiny", "--quiet", "--new")
    assert second.returncode == 0, second.stderr
    assert parse_exports(second.stdout)["ENDPOINT"] != parse_exports(first.stdout)["ENDPOINT"]
    ids = [record.id for record in Registry().list()]
    assert len(ids) == 2
    several = run_as_typed("env")
    assert several.returncode == 1
    assert f"Several endpoints are up: {', '.join(ids)}" in several.stderr
    assert f"`{SCRIPT} status -e {ids[0]}`" in several.stderr
    assert run_as_typed("env", "-e", ids[1]).stdout == second.stdout


def test_an_engine_flag_llama_server_refuses_is_named(llama_server, tiny_model):
    result = run_as_typed("up", "--provider", "local", "--model", "tiny", "--quiet", "--", "--bogus-flag")
    assert result.returncode == 1
    assert "llama-server has no flag --bogus-flag" in result.stderr
    assert "no known cause" not in result.stderr


def test_a_client_without_credentials_gets_an_openai_shaped_refusal_naming_what_is_missing(
    local_endpoint, closing
):
    no_token = closing(openai.OpenAI(base_url=local_endpoint.base_url, api_key="unused", max_retries=0))
    with pytest.raises(openai.AuthenticationError) as caught:
        no_token.models.list()
    assert caught.value.status_code == 401
    assert "the endpoint's token is missing: send it in the x-daytona-preview-token header" in str(
        caught.value
    )
    assert caught.value.code == "missing_preview_token"
    wrong = httpx.get(
        f"{local_endpoint.url}/v1/models", headers={"x-daytona-preview-token": "wrong"}, timeout=30
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_preview_token"

    keyed = lifecycle.up(resolve_spec("tiny", provider="local", auth="key"))
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            closing(openai.OpenAI(base_url=keyed.base_url, api_key="sk-wrong", max_retries=0)).models.list()
        assert "the API key sent as 'Authorization: Bearer KEY' is not this endpoint's" in str(caught.value)
        assert "OPENAI_API_KEY" in str(caught.value)
        assert closing(keyed.openai()).models.list().data  # the right key still works
    finally:
        registry = Registry()
        lifecycle.down(registry.get(keyed.id), registry)
