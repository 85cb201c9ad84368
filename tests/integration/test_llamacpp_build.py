"""The llama-server build and its cache.

The build pipeline (sdist -> extract -> CMake configure -> Ninja build -> verify -> atomic install, under a
lock) runs for real here against a small fake sdist whose "llama.cpp" is a one-file C program, so it takes a
second. The real llama.cpp build is shared with the user's cache and is only built if it is missing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from sandserve.engines import llamacpp_build
from sandserve.engines.llamacpp_build import (
    CMAKE_FLAGS,
    LLAMA_CPP_PYTHON_VERSION,
    BuildProgress,
    build_key,
    cached_server_path,
    ensure_llama_server,
    flags_hash,
    llama_server_path,
    parse_ninja_progress,
    recorded_build_seconds,
    sdist_path,
)
from sandserve.errors import EngineBinaryNotFoundError, EngineBuildError

FAKE_MAIN_C = '#include <stdio.h>\nint main(void) { puts("version: 0 (fake llama-server)"); return 0; }\n'
FAKE_CMAKELISTS = textwrap.dedent("""\
    cmake_minimum_required(VERSION 3.14)
    project(fake_llama C)
    set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
    add_executable(llama-server main.c)
""")
FAILING_CMAKELISTS = (
    'cmake_minimum_required(VERSION 3.14)\nmessage(FATAL_ERROR "deliberate configure failure")\n'
)

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


@pytest.fixture
def temp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SANDSERVE_CACHE_DIR", str(cache))
    monkeypatch.delenv("SANDSERVE_LLAMA_SERVER", raising=False)
    return cache


def write_fake_sdist(cmakelists: str) -> Path:
    """Put a stand-in for the llama-cpp-python sdist where the build looks for its cached download."""
    path = sdist_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    files = {
        f"{root}/PKG-INFO": "Name: llama_cpp_python\n",
        f"{root}/vendor/llama.cpp/CMakeLists.txt": cmakelists,
        f"{root}/vendor/llama.cpp/main.c": FAKE_MAIN_C,
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- cache key ------------------------------------------------------------------------------------------


def test_flags_hash_is_stable_and_tracks_the_flags() -> None:
    assert flags_hash() == flags_hash(list(CMAKE_FLAGS))
    assert flags_hash() == "42c0f1660dc1", "changing CMAKE_FLAGS changes every user's cache key: on purpose?"
    assert flags_hash((*CMAKE_FLAGS, "-DGGML_AVX512=ON")) != flags_hash()
    assert flags_hash(tuple(reversed(CMAKE_FLAGS))) != flags_hash()


def test_cache_layout(temp_cache: Path) -> None:
    assert build_key() == f"{LLAMA_CPP_PYTHON_VERSION}-{flags_hash()}"
    assert cached_server_path() == temp_cache / "llama-server" / build_key() / "llama-server"
    assert sdist_path() == temp_cache / "downloads" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    assert llama_server_path() is None


def test_portable_flags() -> None:
    assert "-DGGML_NATIVE=OFF" in CMAKE_FLAGS
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in CMAKE_FLAGS  # its default downloads a web UI mid-build
    assert "-DLLAMA_BUILD_UI=OFF" in CMAKE_FLAGS


# --- progress -------------------------------------------------------------------------------------------


def test_parse_ninja_progress() -> None:
    line = "[97/206] Building CXX object common/CMakeFiles/llama-common.dir/parsers/ministral3.cpp.o\n"
    assert parse_ninja_progress(line) == BuildProgress(
        "build", 97, 206, "Building CXX object common/CMakeFiles/llama-common.dir/parsers/ministral3.cpp.o"
    )
    assert parse_ninja_progress("[206/206] Linking CXX executable bin/llama-server") == BuildProgress(
        "build", 206, 206, "Linking CXX executable bin/llama-server"
    )
    assert parse_ninja_progress("-- Configuring done") is None
    assert parse_ninja_progress("ninja: no work to do.") is None
    assert parse_ninja_progress("warning: [1/2] inside a message") is None


# --- override -------------------------------------------------------------------------------------------


def test_override_is_used_as_is(temp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "my-llama-server"
    binary.write_text("#!/bin/sh\necho custom\n")
    binary.chmod(0o755)
    monkeypatch.setenv("SANDSERVE_LLAMA_SERVER", str(binary))
    events: list[BuildProgress] = []
    assert ensure_llama_server(events.append) == binary
    assert llama_server_path() == binary
    assert events == []
    assert not (temp_cache / "llama-server").exists()


def test_override_to_a_missing_file_says_so(
    temp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDSERVE_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(EngineBinaryNotFoundError, match="SANDSERVE_LLAMA_SERVER"):
        ensure_llama_server()


# --- the pipeline, end to end on a fake sdist -------------------------------------------------------------


@needs_compiler
def test_build_pipeline_installs_a_verified_binary(temp_cache: Path) -> None:
    write_fake_sdist(FAKE_CMAKELISTS)
    events: list[BuildProgress] = []

    path = ensure_llama_server(events.append)

    assert path == cached_server_path()
    assert subprocess.run([path, "--version"], capture_output=True, text=True).stdout.startswith("version: 0")
    stages = [event.stage for event in events]
    assert stages[0] == "extract" and stages[-1] == "done"
    assert {"configure", "build", "verify", "install"} <= set(stages)
    counted = [event for event in events if event.stage == "build" and event.total]
    assert counted and counted[-1].done == counted[-1].total
    log = (path.parent / "build.log").read_text()
    assert "-DGGML_NATIVE=OFF" in log and "--target llama-server" in log
    assert not list((temp_cache / "llama-server").glob(".build-*")), "the work dir must be removed"
    recorded = recorded_build_seconds()
    assert recorded is not None and recorded >= 0  # what bench/bench_boot.py reports as the build time

    again: list[BuildProgress] = []
    assert ensure_llama_server(again.append) == path
    assert again == [], "a cache hit has nothing to report"


@needs_compiler
def test_failed_build_raises_with_log_and_leaves_nothing_that_looks_built(temp_cache: Path) -> None:
    write_fake_sdist(FAILING_CMAKELISTS)

    with pytest.raises(EngineBuildError) as caught:
        ensure_llama_server()

    error = caught.value
    assert error.log_path == cached_server_path().parent / "build.log"
    assert error.log_path.is_file()
    assert "configure failed" in str(error)
    assert "deliberate configure failure" in str(error)
    assert str(error.log_path) in str(error)
    assert llama_server_path() is None
    assert not list((temp_cache / "llama-server").glob(".build-*"))


def test_damaged_sdist_is_removed_so_the_next_try_downloads_again(temp_cache: Path) -> None:
    sdist = write_fake_sdist(FAKE_CMAKELISTS)
    sdist.write_bytes(sdist.read_bytes()[:100])

    with pytest.raises(EngineBuildError, match="damaged"):
        ensure_llama_server()

    assert not sdist.exists()


@needs_compiler
def test_abandoned_work_dirs_are_cleaned_up(temp_cache: Path) -> None:
    write_fake_sdist(FAKE_CMAKELISTS)
    leftover = temp_cache / "llama-server" / f".build-{build_key()}-killed"
    (leftover / "build" / "bin").mkdir(parents=True)
    (leftover / "build" / "bin" / "llama-server").write_text("half a binary")

    ensure_llama_server()

    assert not leftover.exists()


@needs_compiler
def test_concurrent_callers_build_once(temp_cache: Path) -> None:
    write_fake_sdist(FAKE_CMAKELISTS)
    script = textwrap.dedent("""\
        import json
        from sandserve.engines.llamacpp_build import ensure_llama_server
        stages = []
        path = ensure_llama_server(lambda event: stages.append(event.stage))
        print(json.dumps({"path": str(path), "stages": stages}))
    """)
    callers = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
        )
        for _ in range(3)
    ]
    results = [json.loads(caller.communicate(timeout=120)[0]) for caller in callers]

    assert all(caller.returncode == 0 for caller in callers)
    assert {result["path"] for result in results} == {str(cached_server_path())}
    builders = [result for result in results if "configure" in result["stages"]]
    assert len(builders) == 1


# --- the real engine --------------------------------------------------------------------------------------


@pytest.mark.timeout(1800)  # only if the user's cache has no build yet: then this builds llama.cpp (minutes)
def test_real_llama_server_runs() -> None:
    binary = ensure_llama_server()
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "version:" in result.stdout + result.stderr


@pytest.mark.skipif(os.environ.get("SANDSERVE_TEST_NETWORK") != "1", reason="set SANDSERVE_TEST_NETWORK=1")
@pytest.mark.timeout(600)
def test_sdist_download_from_pypi(temp_cache: Path) -> None:
    with open(os.devnull, "w") as log:
        path = llamacpp_build._ensure_sdist(log, Path(os.devnull), lambda event: None)
    assert path == sdist_path()
    with tarfile.open(path) as tar:
        assert tar.getmember(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/CMakeLists.txt")
