"""What a verb loads before it does anything: `sandserve --help` lists every verb without importing one, and
`env` and `ls` (into a pipe) load none of the heavy libraries. Checked in a fresh interpreter, by the modules
it holds at exit (a behaviour, not a timing: bench/bench_startup.py times them)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandserve.cli import main
from sandserve.cli._app import VERBS, verb_summary
from sandserve.endpoint import Endpoint
from sandserve.providers.handles import LocalHandle
from sandserve.serve.ledger import Registry, State

#: Libraries no start-up verb needs: each costs tens of milliseconds to import.
HEAVY = ("aiohttp", "anthropic", "daytona", "httpx", "litellm", "numpy", "openai", "pydantic", "rich")

#: Runs the CLI as the console script does, then writes the names of the modules loaded to MODULES_OUT.
CHILD = """
import json, os, sys
from sandserve.cli import main
try:
    main(sys.argv[1:], prog_name="sandserve")
except SystemExit:
    pass
with open(os.environ["MODULES_OUT"], "w") as out:
    json.dump(sorted(sys.modules), out)
"""


def modules_loaded_by(tmp_path: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MODULES_OUT": str(out), "COLUMNS": "80"},
        timeout=60,
    )
    return set(json.loads(out.read_text())), done


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


def test_each_verbs_line_in_help_is_its_own_help_cut_as_click_cuts_it() -> None:
    for module in {module for module, _ in VERBS.values()}:
        importlib.import_module(f"sandserve.cli.{module}")
    assert sorted(main.commands) == sorted(VERBS)
    for name, command in main.commands.items():
        for limit in (20, 45, 70, 104, 300):
            assert verb_summary(name, limit) == command.get_short_help_str(limit), (name, limit)


@pytest.mark.fresh_interpreter
def test_help_lists_every_verb_and_imports_none_of_them(tmp_path: Path) -> None:
    modules, done = modules_loaded_by(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == sorted(VERBS)
    assert heavy_among(modules) == []
    loaded = sorted(name for name in modules if name.startswith("sandserve."))
    assert loaded == ["sandserve.cli", "sandserve.cli._app", "sandserve.endpoint_slot", "sandserve.errors"]


@pytest.mark.fresh_interpreter
def test_env_and_ls_load_no_heavy_library(tmp_path: Path) -> None:
    registry = Registry()
    handle = LocalHandle("local", "ready-1", port=9, pid=os.getpid(), start_time="not this process's")
    registry.add("ready-1", provider="local", engine="llamacpp", model="m", spec={}, sandbox=handle)
    endpoint = Endpoint("ready-1", "http://127.0.0.1:9", "m", engine="llamacpp", provider="local")
    registry.update("ready-1", state=State.READY, endpoint=endpoint)

    modules, done = modules_loaded_by(tmp_path, "env")
    assert done.returncode == 0 and "export ENDPOINT=http://127.0.0.1:9" in done.stdout, done.stderr
    assert heavy_among(modules) == []

    modules, done = modules_loaded_by(tmp_path, "ls")
    assert done.returncode == 0 and done.stdout.splitlines()[1].startswith("ready-1\tdead"), done
    assert heavy_among(modules) == []
    assert "sandserve.serve.lifecycle" not in modules and "sandserve.engines" not in modules
