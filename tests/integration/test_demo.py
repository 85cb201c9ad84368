"""`make demo`'s command: locally without a Daytona key, and SGLang on a GPU sandbox with one (.env
included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import as_typed, sandserve_command, sglang_image_env, take_everything_down
from standins.daytona_api import DaytonaStandin

from sandserve.serve.ledger import Registry, State


def run_demo(env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sandserve_command(), "demo", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


#: Words any English haiku about a sandbox is all but sure to use; random weights hit none of them.
ENGLISH = {
    "the",
    "a",
    "and",
    "of",
    "in",
    "where",
    "is",
    "to",
    "with",
    "sandbox",
    "code",
    "ai",
    "agents",
    "run",
}


def test_demo_without_a_key_answers_in_english_from_smollm2(llama_server, smollm2_model):
    result = run_demo()
    assert result.returncode == 0, result.stderr
    assert "(llamacpp, smollm2-135m)" in result.stdout and "asked: Write a haiku" in result.stdout
    assert "random weights" not in result.stdout
    answer = result.stdout.split("answer:", 1)[1].split("prompt +", 1)[0]
    words = re.findall(r"[a-z]+", answer.lower())
    assert len({w for w in words if w in ENGLISH}) >= 3, answer
    assert "x-daytona-preview-token: $TOKEN" in result.stdout  # how to go on, with the token it enforces
    assert "DAYTONA_API_KEY" in result.stdout and "sandserve down" in as_typed(result.stdout)
    (record,) = Registry().list()
    assert record.provider == "local" and record.state is State.READY

    again = run_demo()  # the endpoint already up is reused, not started twice
    assert again.returncode == 0, again.stderr
    assert [r.id for r in Registry().list()] == [record.id]


def test_demo_with_a_key_in_dotenv_serves_gpt_oss_on_daytona():
    standin = DaytonaStandin(
        extra_env={
            **sglang_image_env(),
            "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
            "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": "0.2",
        },
        path_prepend=[Path(sys.executable).parent],
        remap_ports=[8000],  # the guide's port, made distinct per sandbox
    )
    with standin:
        Path(".env").write_text(f"DAYTONA_API_KEY={standin.api_key}\n")
        try:
            refused = run_demo({"DAYTONA_API_URL": standin.url})  # a paid GPU, and no terminal to ask on
            assert refused.returncode == 2 and "--yes" in refused.stderr and standin.create_bodies == []
            result = run_demo({"DAYTONA_API_URL": standin.url}, "--yes")
            assert result.returncode == 0, result.stderr
            assert "(sglang, gpt-oss-20b)" in result.stdout
            assert "random weights" not in result.stdout
            (record,) = Registry().list()
            assert record.provider == "daytona" and record.sandbox.sandbox_id in standin.sandboxes
            runs = standin.sandboxes[record.sandbox.sandbox_id].runs
            # the server's launch (before it, up looks at what the sandbox already holds: weights, caches)
            command = next(run for run in runs if "sglang.launch_server" in str(run.command))
            assert "--model-path openai/gpt-oss-20b" in str(command.command)
        finally:
            take_everything_down()
