"""Fixtures of the fast tier: the pipeline with the in-process fake provider and engine
(tests/unit/fakes.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FAKE, FAKE_ENGINE, FakeProvider, healthy_boot, stop_every_server

from sandserve.engines import Engine
from sandserve.serve import lifecycle


@pytest.fixture(autouse=True)
def no_process_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast tier's promise, kept: a test that would start a process fails instead."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a unit test started a process: it belongs in tests/integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeProvider]]:
    """``lifecycle.up`` serves ``fakes.fake_spec()`` with the fake engine on the fake provider; set
    ``FakeProvider.script`` to choose what the next server does."""
    real_get_engine = lifecycle.get_engine

    def get_engine(name: str, **options: Any) -> Engine:
        return FAKE_ENGINE if name == FAKE else real_get_engine(name, **options)

    monkeypatch.setattr(lifecycle, "get_engine", get_engine)
    monkeypatch.setattr(FakeProvider, "script", healthy_boot())
    stop_every_server()  # also forgets what an earlier test's clean-up deleted
    yield FakeProvider
    stop_every_server()
