"""Build llama.cpp's ``llama-server`` once, from source that comes from PyPI, and cache the binary.

No prebuilt llama.cpp binaries are reachable where sandserve runs offline, but the ``llama-cpp-python`` sdist
on PyPI vendors the whole llama.cpp tree. We download that sdist with pip, extract ``vendor/llama.cpp``, and
build only the server with CMake + Ninja (both PyPI dependencies of sandserve), with portable CPU flags so a
cached binary also runs on another machine with the same CPU features.

Cache layout (under ``sandserve.paths.cache_dir()``)::

    downloads/llama_cpp_python-<version>.tar.gz    the sdist, kept so a rebuild does not download again
    llama-server/<version>-<flags hash>/llama-server   the installed binary (appears atomically)
    llama-server/<version>-<flags hash>/build.log      the log of the last build
    llama-server/<version>-<flags hash>.lock           serialises concurrent builds
    llama-server/.build-<version>-<flags hash>-*/      a build in progress (removed when it ends)
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sandserve.errors import EngineBinaryNotFoundError, EngineBuildError
from sandserve.paths import cache_dir

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_PROJECT = "llama-cpp-python"
SERVER_BINARY_ENV = "SANDSERVE_LLAMA_SERVER"
SERVER_TARGET = "llama-server"

# Portable CPU build of the server alone: no -march=native (GGML_NATIVE=OFF) so the cached binary runs on any
# x86-64 CPU with AVX2/FMA/F16C; no curl/OpenSSL/BLAS so it needs only libstdc++ and libgomp; and no web UI,
# whose default (LLAMA_USE_PREBUILT_UI=ON) downloads it during the build.
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BLAS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)

LOG_TAIL_LINES = 30
VERSION_CHECK_TIMEOUT_S = 60

_NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)$")


@dataclass(frozen=True)
class BuildProgress:
    """One step of ``ensure_llama_server``.

    ``stage`` is one of: wait (another process is building), download, extract, configure, build, verify,
    install, done. ``done``/``total`` count build steps during ``build`` and are None otherwise.
    """

    stage: str
    done: int | None
    total: int | None
    message: str


ProgressCallback = Callable[[BuildProgress], None]


# --- where things are -------------------------------------------------------------------------------


def flags_hash(flags: Sequence[str] = CMAKE_FLAGS) -> str:
    """A short, stable digest of the exact CMake flags (their order included)."""
    return hashlib.sha256("\n".join(flags).encode()).hexdigest()[:12]


def build_key(version: str = LLAMA_CPP_PYTHON_VERSION, flags: Sequence[str] = CMAKE_FLAGS) -> str:
    return f"{version}-{flags_hash(flags)}"


def builds_dir() -> Path:
    return cache_dir() / "llama-server"


def cached_server_path() -> Path:
    """Where the binary for the pinned version and flags lives once built (it may not exist yet)."""
    return builds_dir() / build_key() / "llama-server"


def build_log_path() -> Path:
    return builds_dir() / build_key() / "build.log"


def build_record_path() -> Path:
    """How long the cached binary took to build (JSON: seconds, cpus, built_at), for `bench/bench_boot.py`."""
    return cached_server_path().parent / "build.json"


def recorded_build_seconds() -> float | None:
    try:
        return float(json.loads(build_record_path().read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sdist_path() -> Path:
    return cache_dir() / "downloads" / f"{SDIST_PROJECT.replace('-', '_')}-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"


def llama_server_path() -> Path | None:
    """The binary to use without building anything: $SANDSERVE_LLAMA_SERVER if set, else the cached build."""
    override = os.environ.get(SERVER_BINARY_ENV)
    if override:
        return Path(override)
    cached = cached_server_path()
    return cached if _is_executable(cached) else None


def ensure_llama_server(on_progress: ProgressCallback | None = None) -> Path:
    """Return the path of a ``llama-server`` binary, building and caching it first if needed (minutes).

    Safe to call from several processes at once: one builds, the others wait for it and reuse its result.
    Raises EngineBuildError (with the build log's path) if the build fails.
    """
    report = on_progress or _ignore_progress
    override = os.environ.get(SERVER_BINARY_ENV)
    if override:
        return _checked_override(Path(override))
    target = cached_server_path()
    if _is_executable(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(builds_dir() / f"{build_key()}.lock", report):
        if not _is_executable(target):  # another process may have built it while we waited
            _build_and_install(target, report)
    report(BuildProgress("done", None, None, f"llama-server ready at {target}"))
    return target


# --- the build --------------------------------------------------------------------------------------


def parse_ninja_progress(line: str) -> BuildProgress | None:
    """``[12/206] Building CXX object ...`` -> BuildProgress("build", 12, 206, "Building CXX object ...")."""
    match = _NINJA_PROGRESS.match(line.strip())
    if not match:
        return None
    return BuildProgress("build", int(match.group(1)), int(match.group(2)), match.group(3))


def _build_and_install(target: Path, report: ProgressCallback) -> None:
    _remove_abandoned_builds()
    log_path = build_log_path()
    work_dir = Path(tempfile.mkdtemp(prefix=f".build-{build_key()}-", dir=builds_dir()))
    started = time.monotonic()
    try:
        with open(log_path, "w", encoding="utf-8", errors="replace") as log:
            built = _build(work_dir, log, log_path, report)
            _verify(built, log, log_path, report)
        report(BuildProgress("install", None, None, f"Installing {target}"))
        # Same filesystem (the work dir is inside the cache): the binary appears whole or not at all.
        os.replace(built, target)
        build_record_path().write_text(
            json.dumps(
                {
                    "seconds": round(time.monotonic() - started, 1),
                    "cpus": _job_count(),
                    "built_at": time.time(),
                }
            )
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _build(work_dir: Path, log: IO[str], log_path: Path, report: ProgressCallback) -> Path:
    cmake, ninja = _build_tool("cmake"), _build_tool("ninja")
    sdist = _ensure_sdist(log, log_path, report)

    report(BuildProgress("extract", None, None, f"Extracting vendor/llama.cpp from {sdist.name}"))
    source_dir = _extract_llama_cpp(sdist, work_dir / "src", log, log_path)

    build_dir = work_dir / "build"
    report(BuildProgress("configure", None, None, "Configuring llama.cpp with CMake"))
    configure = [
        str(cmake),
        "-S",
        str(source_dir),
        "-B",
        str(build_dir),
        "-G",
        "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={ninja}",
        *CMAKE_FLAGS,
    ]
    _run_logged(configure, "configure", log, log_path, report)

    jobs = _job_count()
    report(BuildProgress("build", 0, None, f"Compiling llama-server ({jobs} parallel jobs)"))
    build = [str(cmake), "--build", str(build_dir), "--target", SERVER_TARGET, "-j", str(jobs)]
    _run_logged(build, "build", log, log_path, report, parse=parse_ninja_progress)

    built = build_dir / "bin" / SERVER_TARGET
    if not built.is_file():
        raise _build_failure(f"the build finished but {built} is missing", log, log_path)
    return built


def _ensure_sdist(log: IO[str], log_path: Path, report: ProgressCallback) -> Path:
    sdist = sdist_path()
    if sdist.is_file():
        _log_line(log, f"# using the cached source distribution {sdist}")
        return sdist
    sdist.parent.mkdir(parents=True, exist_ok=True)
    report(
        BuildProgress(
            "download",
            None,
            None,
            f"Downloading {SDIST_PROJECT} {LLAMA_CPP_PYTHON_VERSION} source from PyPI (about 75 MB)",
        )
    )
    download_dir = Path(tempfile.mkdtemp(prefix=".download-", dir=sdist.parent))
    try:
        command = [
            *_pip_command(log, log_path),
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{SDIST_PROJECT}=={LLAMA_CPP_PYTHON_VERSION}",
            "-d",
            str(download_dir),
        ]
        _run_logged(command, "download", log, log_path, report)
        tarballs = sorted(download_dir.glob("*.tar.gz"))
        if len(tarballs) != 1:
            raise _build_failure(f"pip download left {len(tarballs)} tarballs, expected 1", log, log_path)
        os.replace(tarballs[0], sdist)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
    return sdist


def _extract_llama_cpp(sdist: Path, dest: Path, log: IO[str], log_path: Path) -> Path:
    root = sdist.name.removesuffix(".tar.gz")
    prefix = f"{root}/vendor/llama.cpp/"
    # The submodule's shallow git dir (its .git file points there) lets the build stamp the llama.cpp commit
    # into `llama-server --version`; without it the version says "commit unknown".
    git_prefix = f"{root}/.git/modules/vendor/llama.cpp/"
    _log_line(log, f"# extracting {prefix} from {sdist}")
    try:
        with tarfile.open(sdist) as tar:
            members = [member for member in tar.getmembers() if member.name.startswith((prefix, git_prefix))]
            if not any(member.name.startswith(prefix) for member in members):
                raise _build_failure(f"{sdist} has no {prefix}", log, log_path)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as exc:
        sdist.unlink(missing_ok=True)  # a damaged download: the next attempt fetches it again
        raise _build_failure(f"{sdist} is damaged ({exc}); it was removed, try again", log, log_path) from exc
    except OSError as exc:
        raise _build_failure(f"cannot extract {sdist}: {exc}", log, log_path) from exc
    return dest / prefix


def _verify(binary: Path, log: IO[str], log_path: Path, report: ProgressCallback) -> None:
    report(BuildProgress("verify", None, None, f"Checking that {binary.name} runs"))
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=VERSION_CHECK_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _build_failure(f"the built binary does not run: {exc}", log, log_path) from exc
    _log_line(log, f"$ {binary} --version\n{result.stdout}{result.stderr}")
    if result.returncode != 0:
        raise _build_failure(f"the built binary exits with {result.returncode} on --version", log, log_path)


def _run_logged(
    command: list[str],
    step: str,
    log: IO[str],
    log_path: Path,
    report: ProgressCallback,
    parse: Callable[[str], BuildProgress | None] | None = None,
) -> None:
    """Run ``command`` with its output going to the log (and, parsed, to ``report``); fail on non-zero
    exit."""
    _log_line(log, "$ " + " ".join(command))
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise _build_failure(f"{step} could not start {command[0]}: {exc}", log, log_path) from exc
    assert process.stdout is not None
    with process:
        for line in process.stdout:
            log.write(line)
            progress = parse(line) if parse else None
            if progress:
                report(progress)
        log.flush()
    if process.returncode != 0:
        raise _build_failure(f"{step} failed (exit code {process.returncode})", log, log_path)


def _build_failure(what: str, log: IO[str], log_path: Path) -> EngineBuildError:
    log.flush()
    tail = _tail(log_path, LOG_TAIL_LINES)
    return EngineBuildError(
        f"Building llama-server failed: {what}. Last lines of the build log:\n{tail}", log_path=log_path
    )


# --- tools and helpers ------------------------------------------------------------------------------


def _build_tool(name: str) -> Path:
    """Prefer the tool installed next to this Python (sandserve depends on the PyPI cmake and ninja)."""
    beside_python = Path(sys.executable).parent / name
    if _is_executable(beside_python):
        return beside_python
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise EngineBuildError(
        f"Building llama-server needs {name}, which is neither next to {sys.executable} nor on PATH. "
        f"Install it with `{sys.executable} -m pip install {name}` and try again."
    )


def _pip_command(log: IO[str], log_path: Path) -> list[str]:
    # Environments made by uv often have no pip; any pip can fetch an sdist, so fall back to the one on PATH.
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise _build_failure(
        f"downloading the llama.cpp source needs pip, and none was found. Install pip, or put "
        f"{sdist_path().name} (from PyPI) at {sdist_path()}",
        log,
        log_path,
    )


def _job_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _checked_override(path: Path) -> Path:
    if not _is_executable(path):
        raise EngineBinaryNotFoundError(path, SERVER_BINARY_ENV)
    return path


def _remove_abandoned_builds() -> None:
    """Work dirs left by killed builds of this key (we hold its lock, so none of them is live)."""
    for leftover in builds_dir().glob(f".build-{build_key()}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _exclusive_lock(lock_path: Path, report: ProgressCallback) -> Iterator[None]:
    with open(lock_path, "a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(
                BuildProgress("wait", None, None, "Another process is building llama-server; waiting for it")
            )
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _log_line(log: IO[str], text: str) -> None:
    log.write(text.rstrip("\n") + "\n")
    log.flush()


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(the build log could not be read)"
    return "\n".join(text.splitlines()[-lines:])


def _ignore_progress(_: BuildProgress) -> None:
    pass
