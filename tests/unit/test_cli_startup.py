"""What a verb loads before it does anything: `sandserve --help` lists every verb without importing one, `env`
and `ls` (into a pipe) load none of the heavy libraries, and `ls` on a terminal only rich, without its emoji
table. Checked in a fresh interpreter, by the modules it holds at exit (a behaviour, not a timing:
bench/bench_startup.py times them)."""

from __future__ import annotations

import importlib
import json
import os
import pty
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

#: Runs the CLI as the console script does, then writes the names of the modules loaded to MODULES_OUT, and
#: whether the garbage collector runs again after it, to COLLECTOR_OUT.
CHILD = """
import gc, json, os, sys
from sandserve.cli import main
try:
    main(sys.argv[1:], prog_name="sandserve")
except SystemExit:
    pass
with open(os.environ["MODULES_OUT"], "w") as out:
    json.dump(sorted(sys.modules), out)
with open(os.environ["COLLECTOR_OUT"], "w") as out:
    json.dump(gc.isenabled(), out)
"""


def child_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MODULES_OUT": str(tmp_path / "modules.json"),
        "COLLECTOR_OUT": str(tmp_path / "collector.json"),
        "COLUMNS": "80",
    }


def modules_loaded_by(tmp_path: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=child_env(tmp_path),
        timeout=60,
    )
    return set(json.loads((tmp_path / "modules.json").read_text())), done


def modules_loaded_on_a_terminal(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    """As ``modules_loaded_by``, stdout and stderr on a pseudo-terminal; also what the terminal showed."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=child_env(tmp_path),
    ) as child:
        os.close(follower)
        shown = b""
        while True:  # read until the child closes the terminal, or it would block on a full one
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        os.close(leader)
        assert child.wait(timeout=60) == 0, shown
    return set(json.loads((tmp_path / "modules.json").read_text())), shown.decode(errors="replace")


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

    modules, shown = modules_loaded_on_a_terminal(tmp_path, "ls")
    assert "ready-1" in shown and "─" in shown  # the table, drawn
    assert heavy_among(modules) == []  # the table is drawn without rich
    # Not the masking patterns, the types of an endpoint's answers, the presets, nor the
    # modules that start and find processes.
    unneeded = {"sandserve.masking", "sandserve.results", "sandserve.presets"}
    assert not (unneeded | {"subprocess", "shutil"}) & modules
    assert "sandserve.serve.lifecycle" not in modules and "sandserve.engines" not in modules


@pytest.mark.fresh_interpreter
def test_the_program_leaves_the_garbage_collector_running(tmp_path: Path) -> None:
    """A brief verb runs with the collector paused; whatever runs after the program's entry returns (an
    embedding script, the interpreter's exit) finds it running again."""
    for args in (["ls"], ["env"], ["--help"], ["presets"], ["no-such-verb"]):
        modules_loaded_by(tmp_path, *args)
        assert json.loads((tmp_path / "collector.json").read_text()) is True, args


@pytest.mark.fresh_interpreter
def test_the_program_ends_a_brief_verb_with_all_its_output_and_its_exit_code() -> None:
    """`python -m sandserve.cli` (as the console script) ends a brief verb without tearing Python down: what
    it printed is all there, and its exit status is the verb's."""
    registry = Registry()
    names = [f"endpoint-{number}" for number in range(10)]
    for name in names:  # ready, with a long model name: more output than one flush of stdout's buffer
        registry.add(
            name,
            provider="local",
            engine="llamacpp",
            model="m" * 1000,
            spec={},
            sandbox=LocalHandle("local", name),
        )
        registry.update(name, state=State.READY)

    def program(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sandserve.cli", *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    listed = program("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["id"] for row in json.loads(listed.stdout)) == names and len(listed.stdout) > 10_000
    missing = program("status", "no-such-endpoint")
    assert missing.returncode == 1 and "no-such-endpoint" in missing.stderr
    assert program("no-such-verb").returncode == 2
