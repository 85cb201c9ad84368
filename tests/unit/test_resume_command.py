"""The command printed after Ctrl-C: the user's own arguments, with what is left swapped in, quoted for a
shell."""

from __future__ import annotations

import shlex
import sys

import pytest

from sandserve.cli.resume import command_line, program, without


def test_options_are_taken_out_in_either_spelling_and_the_rest_kept_in_order():
    args = ["bench", "ep-1", "--concurrency", "1,4", "--output=out dir", "--sweep", "--seed", "3"]
    kept = without(args, valued=("--concurrency", "--output"), flags=("--sweep",))
    assert kept == ["bench", "ep-1", "--seed", "3"]


def test_the_command_is_quoted_for_a_shell(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "argv", ["sandserve", "batch", "in file.jsonl", "out.jsonl"])
    line = command_line(["batch", "in file.jsonl", "out.jsonl"])
    assert shlex.split(line)[1:] == ["batch", "in file.jsonl", "out.jsonl"]


def test_the_program_is_named_as_it_was_started(monkeypatch: pytest.MonkeyPatch, tmp_path):
    # Not on PATH under that name: its path, as typed.
    script = tmp_path / "bin" / "sandserve"
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert program() == str(script)
    # As `python -m sandserve.cli`: that, with this interpreter.
    monkeypatch.setattr(sys, "argv", ["/somewhere/sandserve/cli/__main__.py"])
    assert program().endswith("-m sandserve.cli") and sys.executable in program()


def test_a_program_the_shell_finds_by_its_name_is_named_by_it(monkeypatch: pytest.MonkeyPatch, tmp_path):
    script = tmp_path / "bin" / "sandserve"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", str(script.parent))
    assert program() == "sandserve"
