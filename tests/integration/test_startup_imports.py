"""`--help`, `env` and `ls` import only what they need: none of the heavy libraries the other verbs use.
(bench/bench_startup.py times them; this keeps a later import from quietly bringing the cost back.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandserve.endpoint import Endpoint

HEAVY = ("httpx", "rich", "pygments", "openai", "pydantic", "aiohttp", "daytona", "numpy", "matplotlib")

PROGRAM = """
import json, sys
sys.argv = ["sandserve", *sys.argv[1:]]
from sandserve.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def modules_imported_by(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    line = next(line for line in result.stderr.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


def test_help_imports_nothing_heavy():
    assert heavy_in(modules_imported_by("--help")) == []


@pytest.mark.parametrize("verb", ["env", "ls", "status"])
def test_reading_the_ledger_imports_nothing_heavy(local_endpoint: Endpoint, verb: str):
    modules = modules_imported_by(verb)
    assert "sandserve.serve.ledger" in modules  # it did read the ledger
    assert heavy_in(modules) == []
