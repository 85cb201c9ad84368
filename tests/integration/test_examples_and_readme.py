"""The examples and the README's code, run as a user runs them: every script in examples/ against a local
endpoint, the README's Python snippets taken from the README itself (so they cannot drift), and the README's
first shell commands on the default local model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import parse_exports

from sandserve.endpoint import Endpoint
from sandserve.workloads.corpus import write_synthetic_corpus

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = ROOT / "examples"


def fenced(language: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def environment_of(endpoint: Endpoint) -> dict[str, str]:
    """The environment after `eval "$(sandserve env ID)"`, as a user's shell holds it."""
    return {**os.environ, **parse_exports(endpoint.export_lines())}


def run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 280
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# --- examples/ --------------------------------------------------------------------------------------------


def example_arguments(name: str, tmp_path: Path) -> list[str]:
    if name == "classify_passages.py":
        corpus = write_synthetic_corpus(tmp_path / "books", ["Poe"])
        return ["--per-book", "2", "--corpus-dir", str(corpus), "Poe"]
    return []


def test_every_example_is_covered():
    assert sorted(path.name for path in EXAMPLES.iterdir() if path.is_file()) == [
        "classify_passages.py",
        "query.sh",
        "query_litellm.py",
        "query_openai.py",
    ]


@pytest.mark.parametrize("name", ["query_openai.py", "query_litellm.py", "classify_passages.py"])
def test_each_python_example_runs_against_a_local_endpoint(name, local_endpoint, tmp_path):
    script = EXAMPLES / name
    result = run(
        [sys.executable, str(script), *example_arguments(name, tmp_path)],
        environment_of(local_endpoint),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    expected = {
        "query_openai.py": ["== chat", "== tool calling", "get_weather(", "from cache"],
        "query_litellm.py": ["prompt tokens from cache"],
        "classify_passages.py": ["classifying 2 passages on tiny"],
    }[name]
    for text in expected:
        assert text in result.stdout, result.stdout


def test_query_sh_runs_against_a_local_endpoint(local_endpoint, tmp_path):
    env = {**environment_of(local_endpoint), "MAX_TOKENS": "16"}
    result = run([str(EXAMPLES / "query.sh"), "Say hello"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"choices"' in result.stdout


# --- the README's Python ------------------------------------------------------------------------------------


def test_the_readme_has_the_python_snippets_this_file_runs():
    assert len(fenced("python")) == 3


@pytest.mark.parametrize("index", range(len(fenced("python"))), ids=["use", "fleet", "bench"])
def test_each_python_snippet_of_the_readme_runs(index, local_endpoint, tmp_path):
    snippet = tmp_path / f"snippet_{index}.py"
    snippet.write_text(fenced("python")[index], encoding="utf-8")
    result = run([sys.executable, str(snippet)], environment_of(local_endpoint), cwd=tmp_path, timeout=290)
    assert result.returncode == 0, result.stdout + result.stderr
    if index == 2:  # the bench snippet wrote its report
        assert (tmp_path / "bench-results" / "report.md").is_file()


# --- the README's first commands, on the default local model ---------------------------------------------


def test_the_readmes_serve_commands_run_as_written_on_the_default_model(smollm2_model, tmp_path):
    """`up`, curl, `ls`, `down --all` (which asks first: answered yes on a terminal, as a person would)."""
    block = fenced("sh", section("Serve"))[0]
    script = tmp_path / "serve.sh"
    script.write_text("set -euo pipefail\n" + block, encoding="utf-8")
    result = subprocess.run(
        ["script", "-qec", f"bash {script}", "/dev/null"],
        input="y\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=290,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert '"choices"' in result.stdout and "smollm2-135m" in result.stdout
    assert re.search(r"down smollm2-135m-\w+", result.stdout), result.stdout[-3000:]


def test_the_readmes_first_chat_commands_run_on_the_default_model(smollm2_endpoint):
    lines = [line.split("  #")[0] for line in fenced("sh", section("Use"))[0].splitlines()[:2]]
    assert all(line.startswith(".venv/bin/sandserve chat ") for line in lines)
    for line in lines:
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "80"},
            capture_output=True,
            text=True,
            timeout=280,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        assert result.stdout.strip(), line


def test_reasoning_effort_on_the_default_model_says_it_is_not_available_there(smollm2_endpoint):
    line = next(line for line in fenced("sh", section("Use"))[0].splitlines() if "--reasoning-effort" in line)
    result = subprocess.run(
        ["bash", "-c", line.split("  #")[0]], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "not available on this model (smollm2-135m)" in result.stderr
    assert "leave --reasoning-effort out" in result.stderr
