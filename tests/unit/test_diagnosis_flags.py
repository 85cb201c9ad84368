"""Every fix a boot diagnosis suggests names a flag that works: a `sandserve up` option, or an engine flag
written after `--` (where `up` passes it on unchanged)."""

from __future__ import annotations

import re

import pytest

from sandserve.cli.serve import up
from sandserve.engines import ENGINE_NAMES, get_engine

UP_OPTIONS = {name for param in up.params for name in getattr(param, "opts", ()) if name.startswith("--")}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _fixes() -> list[tuple[str, str]]:
    return [(name, signature.fix) for name in ENGINE_NAMES for signature in get_engine(name).signatures]


@pytest.mark.parametrize(("engine", "fix"), _fixes())
def test_each_flag_a_diagnosis_names_works(engine, fix):
    for match in FLAG.finditer(fix):
        flag = match.group()
        passed_to_the_engine = re.search(r"(^|[\s`])--$", fix[: match.start()].rstrip()) is not None
        assert flag in UP_OPTIONS or passed_to_the_engine, (
            f"{engine}: {flag!r} in {fix!r} is neither a `sandserve up` option nor written after `--`"
        )


def test_engine_flags_after_double_dash_reach_the_engine_command(monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setattr("sys.argv", ["sandserve", "up", "--provider", "daytona", "--dry-run", "--", "--x"])
    result = CliRunner().invoke(
        up, ["--provider", "daytona", "--dry-run", "--json", "--", "--mem-fraction-static", "0.9"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("--mem-fraction-static 0.9") == 1
