"""`sandserve tour`: the guide's tour against the local engine and against the SGLang stand-in."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import sandserve_command
from standins.sglang_server import SGLangStandin

from sandserve.endpoint import Endpoint
from sandserve.workloads.tour import run_tour

FEATURES = [
    "chat",
    "streaming",
    "reasoning_effort",
    "json_schema",
    "regex",
    "ebnf",
    "tool_calls",
    "prefix_cache",
    "responses",
    "messages",
]


@pytest.mark.usefixtures("llama_server", "tiny_model")
def test_tour_on_the_local_engine(local_endpoint):
    steps = {step.key: step for step in run_tour(local_endpoint)}
    assert list(steps) == FEATURES
    failed = {key: step.lines for key, step in steps.items() if step.status == "failed"}
    assert not failed
    # The random model never thinks, so the effort dial has nothing to show: said, not passed or failed.
    assert steps["reasoning_effort"].status == "unavailable"
    assert "enable_thinking" in steps["reasoning_effort"].note
    assert "forced" in steps["tool_calls"].note
    cache_lines = "\n".join(steps["prefix_cache"].lines)
    assert re.search(r"attempt 2: .*, [1-9]\d*/\d+ prompt tokens from cache", cache_lines)
    assert any("network namespace" in line or "audit hook" in line for line in steps["tool_calls"].lines)


@pytest.mark.usefixtures("llama_server", "tiny_model")
def test_tour_command_ends_with_the_table(local_endpoint):
    result = subprocess.run(
        [*sandserve_command(), "tour", local_endpoint.id],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "what this endpoint passed" in result.stdout
    assert "gibberish" in result.stdout and "forced" in result.stdout
    assert re.search(r"attempt 1: \d+\.\d\ds, \d+/\d+ prompt tokens from cache", result.stdout)


def test_tour_on_sglang_passes_everything():
    with SGLangStandin(
        served_model_name="gpt-oss-20b",
        reasoning_parser="gpt-oss",
        tool_call_parser="gpt-oss",
        enable_cache_report=True,
    ) as server:
        endpoint = Endpoint(id="sg", url=server.url, model="gpt-oss-20b", engine="sglang")
        steps = list(run_tour(endpoint))
        assert [step.key for step in steps] == FEATURES
        assert {step.key: step.status for step in steps} == dict.fromkeys(FEATURES, "passed")
        tool_step = next(step for step in steps if step.key == "tool_calls")
        assert "forced" not in tool_step.note  # a real model picks the tool itself
        assert any("Lisbon" in line for line in tool_step.lines)
        responses = next(step for step in steps if step.key == "responses")
        assert "no function tools, a JSON schema" in responses.note  # what SGLang 0.5.12.post1 leaves out

        result = subprocess.run(
            [*sandserve_command(), "tour"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "ENDPOINT": server.url},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("passed") >= len(FEATURES)


def test_tour_fails_with_exit_code_when_a_feature_fails():
    # No reasoning parser and no tool parser: the tool call stays text, so the loop step fails.
    with SGLangStandin(served_model_name="gpt-oss-20b", enable_cache_report=True) as server:
        result = subprocess.run(
            [*sandserve_command(), "tour"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "ENDPOINT": server.url},
        )
    assert result.returncode == 1
    assert re.search(r"tool calling loop.*failed", result.stdout)


def test_on_a_model_without_tools_the_tool_step_is_not_available_not_failed(smollm2_endpoint):
    """SmolLM2's chat template has no tool syntax (llama-server says so in /props): not a failure."""
    assert smollm2_endpoint.capabilities().tool_calls is False
    (step,) = run_tour(smollm2_endpoint, only={"tool_calls"})
    assert step.status == "unavailable"
    assert step.note == "Tool calling is not available on this model (smollm2-135m)."
    (step,) = run_tour(smollm2_endpoint, only={"reasoning_effort"})
    assert (step.status, step.note) == (
        "unavailable",
        "Reasoning effort is not available on this model (smollm2-135m).",
    )
