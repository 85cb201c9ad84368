"""Run a batch of OpenAI-style requests against an Endpoint: bounded, retried, resumable.

Input is the OpenAI batch format (JSONL, one request per line); output is the OpenAI batch output format, one
whole line per finished request, appended and flushed as each request finishes. An interrupted run (Ctrl-C, a
crash, kill -9) therefore leaves a valid file, and running again completes it: finished custom_ids are
skipped. Output order is not input order: join on custom_id.

``order="input"`` streams the input file, so memory stays flat however long it is (only the custom_ids are
kept, to catch duplicates and to resume). ``order="prefix"`` reads every request body into memory, so that one
request of each shared-prefix group can go first and the server computes each shared prefix once.

The library never prints: progress goes to the ``on_progress`` callback, the outcome to the returned
:class:`BatchSummary` (also written next to the output as ``OUT.summary.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import functools
import math
import os
import random
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import aiohttp

from sandserve.client.transport import server_message
from sandserve.client.usage import usage_of
from sandserve.endpoint import Endpoint
from sandserve.errors import (
    BatchInputError,
    BatchOutputError,
    ConfigError,
    EndpointUnavailableError,
)
from sandserve.results import TokenUsage

try:
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - orjson ships with sglang-router
    import json

    _loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


Order = Literal["input", "prefix"]
ORDERS: tuple[Order, ...] = ("input", "prefix")
SUPPORTED_URLS = ("/v1/chat/completions", "/v1/completions", "/generate")
#: Status codes that mean "try again later"; every other 4xx is the request's own fault and is never retried.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

DEFAULT_CONCURRENCY = 64
MAX_DEFAULT_CONCURRENCY = 1024
#: SGLang's longest-prefix-match scheduling falls back to first-come-first-served above this many waiting
#: requests, so the default keeps at most this many waiting beyond what the server runs at once.
SGLANG_LPM_WAITING_LIMIT = 128
DEFAULT_MAX_RETRIES = 5
DEFAULT_REQUEST_TIMEOUT_S = 600.0
DEFAULT_CONNECT_TIMEOUT_S = 30.0
#: After this many requests in a row exhausted their retries, the endpoint is taken to be broken.
GIVE_UP_AFTER_CONSECUTIVE_FAILURES = 10
PROGRESS_INTERVAL_S = 0.25

#: Requests whose prompts share their first PREFIX_KEY_CHARS characters form one shared-prefix group.
PREFIX_KEY_CHARS = 1024
#: Rough characters per token, used only to size prefix-order waves against the KV pool.
CHARS_PER_TOKEN = 4
#: Share of the KV pool one wave's shared prefixes may fill, leaving room for the requests that reuse them.
KV_POOL_WAVE_SHARE = 0.7
#: Endpoint.info keys (set at boot) that describe the server's capacity, first match wins.
INFO_MAX_RUNNING_REQUESTS = ("max_running_requests",)
INFO_KV_POOL_TOKENS = ("kv_pool_tokens", "max_total_num_tokens")


# --- data --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request: ``body`` is POSTed to ``url``, relative to the endpoint (``/v1/chat/completions``...)."""

    custom_id: str
    body: dict[str, Any]
    url: str = "/v1/chat/completions"

    def __post_init__(self) -> None:
        if self.url not in SUPPORTED_URLS:
            raise ConfigError(
                f"Unsupported batch url {self.url!r} (custom_id {self.custom_id!r}).",
                hint=f"Use one of: {', '.join(SUPPORTED_URLS)}.",
            )


Usage = TokenUsage
NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class ResultError:
    code: str
    """``http_<status>``, an exception class name, ``malformed_response`` or ``invalid_input``."""
    message: str


@dataclass(slots=True)
class BatchResult:
    """How one request ended. ``error`` is None exactly when it succeeded.

    A failed request that got an HTTP answer keeps it (``status_code``, ``body``), as the OpenAI output does.
    """

    custom_id: str
    status_code: int | None = None
    request_id: str = ""
    body: Any = None
    error: ResultError | None = None
    usage: Usage = NO_USAGE
    attempts: int = 0
    latency_s: float = 0.0
    """From the first attempt's start to the final answer, backoff included."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_output_line(self) -> dict[str, Any]:
        """The OpenAI batch output line."""
        response = None
        if self.status_code is not None:
            response = {"status_code": self.status_code, "request_id": self.request_id, "body": self.body}
        error = None if self.error is None else {"code": self.error.code, "message": self.error.message}
        return {
            "id": f"batch_req_{os.urandom(12).hex()}",
            "custom_id": self.custom_id,
            "response": response,
            "error": error,
        }


@dataclass(frozen=True, slots=True)
class BatchProgress:
    total: int | None
    """Requests in the whole batch (None when the requests come from an iterable of unknown length)."""
    done: int
    """Finished requests, those skipped as finished by an earlier run included."""
    skipped: int
    succeeded: int
    failed: int
    in_flight: int
    retries: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    elapsed_s: float

    @property
    def requests_per_s(self) -> float:
        return _rate(self.succeeded + self.failed, self.elapsed_s)

    @property
    def input_tokens_per_s(self) -> float:
        return _rate(self.input_tokens, self.elapsed_s)

    @property
    def output_tokens_per_s(self) -> float:
        return _rate(self.output_tokens, self.elapsed_s)


@dataclass(frozen=True)
class BatchSummary:
    """What this run did. Requests finished by an earlier run count only in ``skipped``."""

    requests: int
    succeeded: int
    failed: int
    skipped: int
    retries: int
    wall_s: float
    requests_per_s: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    input_tokens_per_s: float
    output_tokens_per_s: float
    cached_share: float
    """cached_tokens / input_tokens: the share of prompt tokens the server found in its prefix cache."""
    latency_p50_s: float | None
    """Latency percentiles of the successful requests (retries included)."""
    latency_p90_s: float | None
    latency_p99_s: float | None
    errors_by_kind: dict[str, int]
    concurrency: int
    order: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before a retry: exponential with full jitter, or what Retry-After asks for."""

    base_s: float = 1.0
    max_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (0 for the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        return random.uniform(0.0, min(self.max_s, self.base_s * 2**retry_number))


ResultSink = Callable[[BatchResult], None]
ProgressCallback = Callable[[BatchProgress], None]


def summary_path(output_path: str | os.PathLike[str]) -> Path:
    """Where run_batch writes the summary of a run that writes ``output_path``."""
    return Path(f"{os.fspath(output_path)}.summary.json")


def default_concurrency(endpoint: Endpoint) -> int:
    """In-flight requests that keep the server busy without defeating its prefix-aware scheduling.

    When boot recorded how many requests the server runs at once (R), send R plus up to R waiting (the
    server is never idle between requests), at most SGLANG_LPM_WAITING_LIMIT waiting; otherwise 64.
    """
    running = _info_count(endpoint, INFO_MAX_RUNNING_REQUESTS)
    if running is None:
        return DEFAULT_CONCURRENCY
    return min(running + min(running, SGLANG_LPM_WAITING_LIMIT), MAX_DEFAULT_CONCURRENCY)


def _info_count(endpoint: Endpoint, keys: tuple[str, ...]) -> int | None:
    """The first positive integer that boot recorded under one of ``keys``."""
    for key in keys:
        value = endpoint.info.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# --- public entry points -----------------------------------------------------------------------------


async def run_batch(
    endpoint: Endpoint,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    concurrency: int | None = None,
    order: Order = "input",
    max_retries: int = DEFAULT_MAX_RETRIES,
    retry_errors: bool = False,
    backoff: Backoff = Backoff(),
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Send every request of the batch file ``input_path`` and append one line per request to ``output_path``.

    Requests already in ``output_path`` are skipped (resume); with ``retry_errors`` their error lines are
    removed and those requests sent again. Malformed input lines become error lines naming their line
    number; duplicate custom_ids stop the run before anything is sent. Raises BatchInputError,
    BatchOutputError, ConfigError for bad arguments, and EndpointUnavailableError when the endpoint cannot be
    reached (before the first request, or for a whole retry cycle) or keeps failing; the output file holds
    only whole lines in every case. The summary is written to ``summary_path(output_path)`` when the run
    completes. Chat and completions bodies without a ``model`` get the endpoint's.
    """
    started = time.monotonic()
    input_path, output_path = Path(input_path), Path(output_path)
    _check_order(order)
    concurrency = _resolve_concurrency(endpoint, concurrency)
    _check_paths(input_path, output_path)
    previous = _read_previous_output(output_path)
    finished = previous.succeeded if retry_errors else previous.succeeded | previous.failed
    scan = _scan_input(input_path, finished, keep_requests=order == "prefix")
    tally = _Tally(total=scan.count, skipped=scan.skipped, started=started)
    if scan.count - scan.skipped - len(scan.invalid) > 0:
        await _preflight(endpoint, max_retries=max_retries, backoff=backoff)
    run = functools.partial(
        _execute,
        endpoint,
        tally=tally,
        concurrency=concurrency,
        max_retries=max_retries,
        backoff=backoff,
        request_timeout_s=request_timeout_s,
        on_progress=on_progress,
    )

    with JsonlSink(output_path, drop_errors=retry_errors and bool(previous.failed)) as sink:
        for line in scan.invalid:
            result = line.to_result()
            sink(result)
            tally.add(result)
        if order == "prefix":
            await run(plan_prefix_waves(scan.requests, kv_pool_tokens=_kv_pool_tokens(endpoint)), sink)
        else:
            with _streamed_requests(input_path, finished) as requests:
                await run([requests], sink)

    summary = tally.summary(concurrency=concurrency, order=order)
    _write_json_atomically(summary_path(output_path), summary.to_dict())
    return summary


async def run_requests(
    endpoint: Endpoint,
    requests: Iterable[BatchRequest],
    sink: ResultSink,
    *,
    concurrency: int | None = None,
    order: Order = "input",
    max_retries: int = DEFAULT_MAX_RETRIES,
    backoff: Backoff = Backoff(),
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Send requests built in code; ``sink`` receives each BatchResult as it finishes (in finishing order).

    ``requests`` is consumed lazily in input order (a generator keeps memory flat); ``order="prefix"``
    materialises it. Pass an open ``JsonlSink(path)`` as the sink to write an OpenAI batch output file (with
    ``read_finished_ids(path)`` to leave out what an earlier run finished), or a list's ``append`` to keep the
    results. Nothing is skipped or written here besides what the sink does; no summary file is written.
    """
    _check_order(order)
    concurrency = _resolve_concurrency(endpoint, concurrency)
    if order == "prefix":
        requests = list(requests)
    total = len(requests) if isinstance(requests, Sized) else None
    unique = _reject_duplicates(requests)
    waves: list[Iterable[BatchRequest]] = [unique]
    if order == "prefix":
        waves = list(plan_prefix_waves(list(unique), kv_pool_tokens=_kv_pool_tokens(endpoint)))
    tally = _Tally(total=total, skipped=0, started=time.monotonic())
    if total != 0:
        await _preflight(endpoint, max_retries=max_retries, backoff=backoff)
    await _execute(
        endpoint,
        waves,
        sink,
        tally=tally,
        concurrency=concurrency,
        max_retries=max_retries,
        backoff=backoff,
        request_timeout_s=request_timeout_s,
        on_progress=on_progress,
    )
    return tally.summary(concurrency=concurrency, order=order)


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _synchronous(coroutine_function: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, _T]:
    @functools.wraps(coroutine_function)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return asyncio.run(coroutine_function(*args, **kwargs))

    name = coroutine_function.__name__
    run.__name__ = run.__qualname__ = f"{name}_sync"
    blurb = f"Blocking form of ``{name}`` (runs its own event loop).\n\n"
    run.__doc__ = blurb + (coroutine_function.__doc__ or "")
    return run


run_batch_sync = _synchronous(run_batch)
run_requests_sync = _synchronous(run_requests)


# --- argument checks -----------------------------------------------------------------------------------


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ConfigError(f"Unknown batch order {order!r}.", hint="Use 'input' or 'prefix'.")


def _resolve_concurrency(endpoint: Endpoint, concurrency: int | None) -> int:
    if concurrency is None:
        return default_concurrency(endpoint)
    if concurrency < 1:
        raise ConfigError(
            f"Concurrency must be at least 1 (got {concurrency}).",
            hint="Leave it out to size it from the server's capacity.",
        )
    return concurrency


def _check_paths(input_path: Path, output_path: Path) -> None:
    if not input_path.exists():
        raise BatchInputError(input_path, "no such file")
    if not input_path.is_file():
        raise BatchInputError(input_path, "not a regular file")
    if output_path.exists() and input_path.exists() and output_path.samefile(input_path):
        raise BatchOutputError(output_path, "it is the input file")
    if output_path.is_dir():
        raise BatchOutputError(output_path, "it is a directory")
    if not output_path.parent.is_dir():
        raise BatchOutputError(output_path, f"the directory {output_path.parent} does not exist")


def _reject_duplicates(requests: Iterable[BatchRequest]) -> Iterator[BatchRequest]:
    seen: set[str] = set()
    for request in requests:
        if request.custom_id in seen:
            raise ConfigError(
                f"Duplicate custom_id {request.custom_id!r} in the requests.",
                hint="Give every request its own custom_id: results are matched on it.",
            )
        seen.add(request.custom_id)
        yield request


# --- reading the input file ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """An input line that is not a usable request; it becomes an error line."""

    line_number: int
    custom_id: str
    message: str

    def to_result(self) -> BatchResult:
        return BatchResult(custom_id=self.custom_id, error=ResultError("invalid_input", self.message))


def parse_input_line(line: bytes | str, line_number: int) -> BatchRequest | InvalidLine | None:
    """One line of an OpenAI batch file; None for a blank line."""
    if not line.strip():
        return None
    fallback_id = f"line-{line_number}"
    try:
        item = _loads(line)
    except ValueError as error:
        return InvalidLine(line_number, fallback_id, f"line {line_number}: not valid JSON ({error})")
    if not isinstance(item, dict):
        return InvalidLine(line_number, fallback_id, f"line {line_number}: expected a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return InvalidLine(line_number, fallback_id, f"line {line_number}: missing custom_id")
    where = f"line {line_number} (custom_id {custom_id!r})"
    method = item.get("method", "POST")
    if method != "POST":
        return InvalidLine(line_number, custom_id, f"{where}: method must be POST, not {method!r}")
    url = item.get("url", "/v1/chat/completions")
    if url not in SUPPORTED_URLS:
        return InvalidLine(
            line_number,
            custom_id,
            f"{where}: unsupported url {url!r}; use one of {', '.join(SUPPORTED_URLS)}",
        )
    body = item.get("body")
    if not isinstance(body, dict):
        return InvalidLine(line_number, custom_id, f"{where}: missing body (a JSON object)")
    return BatchRequest(custom_id=custom_id, body=body, url=url)


def _read_input(path: Path) -> Generator[tuple[int, BatchRequest | InvalidLine], None, None]:
    """(line number, request or invalid line) for every non-blank line, streamed."""
    try:
        file = path.open("rb")
    except OSError as error:
        raise BatchInputError(path, error.strerror or str(error)) from error
    with file:
        try:
            for line_number, line in enumerate(file, start=1):
                parsed = parse_input_line(line, line_number)
                if parsed is not None:
                    yield line_number, parsed
        except OSError as error:
            raise BatchInputError(path, error.strerror or str(error)) from error


@contextlib.contextmanager
def _streamed_requests(path: Path, finished: set[str]) -> Iterator[Iterator[BatchRequest]]:
    """The input file's valid, unfinished requests, read as they are needed; the file closes on abort too."""
    lines = _read_input(path)
    try:
        yield (item for _, item in lines if isinstance(item, BatchRequest) and item.custom_id not in finished)
    finally:
        lines.close()


@dataclass
class _InputScan:
    count: int = 0
    skipped: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)
    """The invalid lines not yet reported by an earlier run."""
    requests: list[BatchRequest] = field(default_factory=list)
    """The requests still to send, only when asked to keep them (prefix order)."""


def _scan_input(path: Path, finished: set[str], *, keep_requests: bool) -> _InputScan:
    """Count and check the input before anything is sent: duplicates stop the run here, with OUT untouched."""
    scan = _InputScan()
    seen: set[str] = set()
    duplicates: list[tuple[str, int]] = []
    for line_number, item in _read_input(path):
        if item.custom_id in seen:
            duplicates.append((item.custom_id, line_number))
        seen.add(item.custom_id)
        scan.count += 1
        if item.custom_id in finished:
            scan.skipped += 1
        elif isinstance(item, InvalidLine):
            scan.invalid.append(item)
        elif keep_requests:
            scan.requests.append(item)
    if duplicates:
        shown = ", ".join(f"{custom_id!r} (again on line {line})" for custom_id, line in duplicates[:5])
        more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        raise BatchInputError(
            path,
            f"duplicate custom_id {shown}{more}",
            hint="Give every request its own custom_id: results are matched on it.",
        )
    return scan


# --- the output file -----------------------------------------------------------------------------------


@dataclass
class _PreviousOutput:
    succeeded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)


def read_finished_ids(output_path: str | os.PathLike[str]) -> tuple[set[str], set[str]]:
    """The custom_ids an existing output file holds: (succeeded, failed). Partial last lines don't count."""
    previous = _read_previous_output(Path(output_path))
    return previous.succeeded, previous.failed


def _read_previous_output(path: Path) -> _PreviousOutput:
    previous = _PreviousOutput()
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return previous
    except OSError as error:
        raise BatchOutputError(path, error.strerror or str(error)) from error
    with file:
        for line in file:
            entry = _parse_output_line(line)
            if entry is not None:
                custom_id, ok = entry
                (previous.succeeded if ok else previous.failed).add(custom_id)
    previous.failed -= previous.succeeded
    return previous


def _parse_output_line(line: bytes) -> tuple[str, bool] | None:
    """(custom_id, succeeded) of a whole output line; None for a partial or foreign line."""
    if not line.endswith(b"\n"):
        return None
    try:
        item = _loads(line)
    except ValueError:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
        return None
    return item["custom_id"], item.get("error") is None


class JsonlSink:
    """Appends each result as one OpenAI batch output line, flushed at once: a crash leaves only whole lines.

    Opening it cuts off a partial last line left by an earlier crash (that request is simply run again), and,
    with ``drop_errors``, removes the error lines so that those requests can be retried without duplicates.
    """

    def __init__(self, path: str | os.PathLike[str], *, drop_errors: bool = False) -> None:
        self.path = Path(path)
        self._drop_errors = drop_errors
        self._file: Any = None

    def __enter__(self) -> JsonlSink:
        try:
            if self._drop_errors:
                _drop_error_lines(self.path)
            else:
                truncate_partial_last_line(self.path)
            self._file = self.path.open("ab", buffering=0)
        except OSError as error:
            raise BatchOutputError(self.path, error.strerror or str(error)) from error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __call__(self, result: BatchResult) -> None:
        if self._file is None:
            raise RuntimeError("JsonlSink is not open: use it in a with block")
        data = memoryview(_dumps(result.to_output_line()) + b"\n")
        # One unbuffered write per line: normally a single write(2), so a killed process never leaves half
        # a line behind; the loop only matters for the rare short write. A line torn by a full disk is cut
        # off when the file is next opened.
        try:
            while data:
                data = data[self._file.write(data) :]
        except OSError as error:
            raise BatchOutputError(self.path, error.strerror or str(error)) from error


def truncate_partial_last_line(path: Path) -> int:
    """Cut the file back to its last newline; returns how many bytes were dropped (0 if none or no file)."""
    try:
        file = path.open("r+b")
    except FileNotFoundError:
        return 0
    with file:
        size = file.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            file.seek(start)
            chunk = file.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            file.truncate(end)
        return size - end


def _drop_error_lines(path: Path) -> None:
    """Rewrite the output file without its error lines (and any partial tail), atomically."""
    if not path.exists():
        return
    with (
        path.open("rb") as source,
        tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as target,
    ):
        for line in source:
            entry = _parse_output_line(line)
            if line.endswith(b"\n") and (entry is None or entry[1]):
                target.write(line)
        target.flush()
        os.fsync(target.fileno())
    os.replace(target.name, path)


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    try:
        with tempfile.NamedTemporaryFile(
            "wb", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as file:
            file.write(_dumps(data))
        os.replace(file.name, path)
    except OSError as error:
        raise BatchOutputError(path, error.strerror or str(error)) from error


# --- prefix order ----------------------------------------------------------------------------------------


def prompt_text(request: BatchRequest) -> str:
    """The request's prompt as text, in the order the server sees it (roles included): the prefix key."""
    body = request.body
    if request.url == "/v1/chat/completions":
        parts = [_dumps(body["tools"]).decode()] if body.get("tools") else []
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                parts.append(f"{message.get('role', '')}\x00{_content_text(message.get('content'))}")
        return "\x00".join(parts)
    if request.url == "/v1/completions":
        prompt = body.get("prompt")
    else:
        prompt = body.get("text", body.get("input_ids"))
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else _dumps(prompt).decode()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    return "" if content is None else _dumps(content).decode()


def _part_text(part: Any) -> str:
    """A text part's text; any other part (an image...) as its JSON, which identifies it just as well."""
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return str(part["text"])
    return _dumps(part).decode()


def plan_prefix_waves(
    requests: list[BatchRequest], *, key_chars: int = PREFIX_KEY_CHARS, kv_pool_tokens: int | None = None
) -> list[list[BatchRequest]]:
    """Waves to send one after another: one request of each shared-prefix group, then the rest of the groups.

    Requests are sorted by prompt, so requests sharing a prefix sit together (longer shared parts closest),
    and grouped by their first ``key_chars`` characters. When the KV pool size is known, groups are taken in
    chunks whose warm-up prompts fill at most KV_POOL_WAVE_SHARE of it, so that the cached prefixes are still
    there when the rest of their group arrives: waves are then warm-up 1, rest 1, warm-up 2, rest 2, ...
    """
    keyed = sorted(((prompt_text(request), request) for request in requests), key=lambda pair: pair[0])
    groups: list[list[tuple[str, BatchRequest]]] = []
    for text, request in keyed:
        if groups and groups[-1][0][0][:key_chars] == text[:key_chars]:
            groups[-1].append((text, request))
        else:
            groups.append([(text, request)])

    budget_chars = math.inf
    if kv_pool_tokens is not None:
        budget_chars = kv_pool_tokens * KV_POOL_WAVE_SHARE * CHARS_PER_TOKEN
    waves: list[list[BatchRequest]] = []
    warm_up: list[BatchRequest] = []
    rest: list[BatchRequest] = []
    warm_up_chars = 0
    for group in groups:
        leader_text, leader = group[0]
        if warm_up and warm_up_chars + len(leader_text) > budget_chars:
            waves += [warm_up, rest] if rest else [warm_up]
            warm_up, rest, warm_up_chars = [], [], 0
        warm_up.append(leader)
        warm_up_chars += len(leader_text)
        rest.extend(request for _, request in group[1:])
    if warm_up:
        waves += [warm_up, rest] if rest else [warm_up]
    return waves


def _kv_pool_tokens(endpoint: Endpoint) -> int | None:
    return _info_count(endpoint, INFO_KV_POOL_TOKENS)


# --- sending ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    code: str
    message: str
    retryable: bool
    status_code: int | None = None
    body: Any = None
    request_id: str = ""
    retry_after: float | None = None
    unreachable: bool = False
    """No connection could be made at all (as opposed to a connection that broke)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status_code: int
    request_id: str
    body: Any


def _json_session(
    endpoint: Endpoint, *, connections: int, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    headers = {"Content-Type": "application/json", **endpoint.request_headers()}
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout)


async def _preflight(endpoint: Endpoint, *, max_retries: int, backoff: Backoff) -> None:
    """Fail fast, before the output file is touched, if the endpoint is down or refuses our credentials."""
    timeout = aiohttp.ClientTimeout(total=DEFAULT_CONNECT_TIMEOUT_S)
    async with _json_session(endpoint, connections=1, timeout=timeout) as session:
        problem = ""
        for retry_number in range(min(max_retries, 2) + 1):
            if retry_number:
                await asyncio.sleep(backoff.delay(retry_number - 1))
            try:
                async with session.get(f"{endpoint.url}/v1/models") as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = f"no connection ({_describe(error)})"
                continue
            if status in (401, 403):
                raise EndpointUnavailableError(endpoint.url, f"it refused our credentials (HTTP {status})")
            return
        raise EndpointUnavailableError(endpoint.url, problem)


class _Client:
    """Sends one request until it succeeds, fails for good, or runs out of retries."""

    def __init__(
        self,
        endpoint: Endpoint,
        session: aiohttp.ClientSession,
        tally: _Tally,
        breaker: _Breaker,
        *,
        max_retries: int,
        backoff: Backoff,
    ) -> None:
        self._endpoint = endpoint
        self._session = session
        self._tally = tally
        self._breaker = breaker
        self._max_retries = max_retries
        self._backoff = backoff
        self._urls = {url: f"{endpoint.url}{url}" for url in SUPPORTED_URLS}

    async def send(self, request: BatchRequest) -> BatchResult:
        started = time.monotonic()
        url = self._urls[request.url]
        payload = self._payload(request)
        attempts = 0
        while True:
            attempts += 1
            outcome = await self._attempt(url, payload)
            if isinstance(outcome, _Answer):
                return BatchResult(
                    custom_id=request.custom_id,
                    status_code=outcome.status_code,
                    request_id=outcome.request_id,
                    body=outcome.body,
                    usage=usage_of(outcome.body),
                    attempts=attempts,
                    latency_s=time.monotonic() - started,
                )
            if not outcome.retryable or attempts > self._max_retries:
                break
            self._tally.retries += 1
            await asyncio.sleep(self._backoff.delay(attempts - 1, outcome.retry_after))
        if outcome.unreachable:
            self._breaker.check_reachable_since(started, attempts, outcome)
        return BatchResult(
            custom_id=request.custom_id,
            status_code=outcome.status_code,
            request_id=outcome.request_id,
            body=outcome.body,
            error=ResultError(outcome.code, outcome.message),
            attempts=attempts,
            latency_s=time.monotonic() - started,
        )

    def _payload(self, request: BatchRequest) -> bytes:
        body = request.body
        if request.url != "/generate" and "model" not in body and self._endpoint.model:
            body = {**body, "model": self._endpoint.model}
        return _dumps(body)

    async def _attempt(self, url: str, payload: bytes) -> _Answer | _Failure:
        try:
            async with self._session.post(url, data=payload) as response:
                raw = await response.read()
                status = response.status
                request_id = response.headers.get("x-request-id", "")
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientConnectorError as error:
            self._breaker.saw_unreachable()
            return _Failure(type(error).__name__, _describe(error), retryable=True, unreachable=True)
        except (aiohttp.ClientError, TimeoutError) as error:
            return _Failure(type(error).__name__, _describe(error), retryable=True)
        self._breaker.saw_answer()
        if 200 <= status < 300:
            return _answer(status, request_id, raw)
        body = _json_or_text(raw)
        return _Failure(
            f"http_{status}",
            server_message(body, f"HTTP {status} with an empty body"),
            retryable=status in RETRYABLE_STATUSES,
            status_code=status,
            body=body,
            request_id=request_id,
            retry_after=parse_retry_after(retry_after),
        )


def _answer(status: int, request_id: str, raw: bytes) -> _Answer | _Failure:
    try:
        body = _loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, (dict, list)):
        text = raw[:500].decode(errors="replace")
        message = f"HTTP {status} with a body that is not a JSON object: {text!r}"
        return _Failure(
            "malformed_response",
            message,
            retryable=True,
            status_code=status,
            body=text,
            request_id=request_id,
        )
    if not request_id and isinstance(body, dict) and isinstance(body.get("id"), str):
        request_id = body["id"]
    return _Answer(status, request_id, body)


def _json_or_text(raw: bytes) -> Any:
    try:
        return _loads(raw)
    except ValueError:
        return raw[:2000].decode(errors="replace")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- running -------------------------------------------------------------------------------------------


class _Breaker:
    """Stops a run whose endpoint is gone, rather than writing an error line for every remaining request."""

    def __init__(self, endpoint: Endpoint, *, max_retries: int) -> None:
        self._url = endpoint.url
        self._max_retries = max_retries
        self._unreachable_since: float | None = None
        self._consecutive_exhausted = 0

    def saw_answer(self) -> None:
        self._unreachable_since = None

    def saw_unreachable(self) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()

    def check_reachable_since(self, started: float, attempts: int, failure: _Failure) -> None:
        """Raise if nothing could connect during this request's whole retry cycle: the endpoint is down."""
        if self._unreachable_since is not None and self._unreachable_since <= started:
            seconds = time.monotonic() - self._unreachable_since
            raise EndpointUnavailableError(
                self._url, f"no connection for {seconds:.0f} s, {attempts} attempts ({failure.message})"
            )

    def after(self, result: BatchResult) -> None:
        """Raise once GIVE_UP_AFTER_CONSECUTIVE_FAILURES requests in a row have exhausted their retries."""
        exhausted = result.error is not None and result.attempts > self._max_retries
        self._consecutive_exhausted = self._consecutive_exhausted + 1 if exhausted else 0
        if self._consecutive_exhausted >= GIVE_UP_AFTER_CONSECUTIVE_FAILURES:
            assert result.error is not None
            raise EndpointUnavailableError(
                self._url,
                f"the last {self._consecutive_exhausted} requests all failed after {self._max_retries} "
                f"retries (latest: {result.error.code}: {result.error.message})",
            )


class _Tally:
    """Running totals of a run, for progress reports and the summary."""

    def __init__(self, *, total: int | None, skipped: int, started: float) -> None:
        self.total = total
        self.skipped = skipped
        self.succeeded = 0
        self.failed = 0
        self.retries = 0
        self.in_flight = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.errors_by_kind: Counter[str] = Counter()
        self._latencies = array("d")
        self._started = started

    def add(self, result: BatchResult) -> None:
        if result.error is None:
            self.succeeded += 1
            self._latencies.append(result.latency_s)
        else:
            self.failed += 1
            self.errors_by_kind[result.error.code] += 1
        self.input_tokens += result.usage.prompt_tokens
        self.output_tokens += result.usage.completion_tokens
        self.cached_tokens += result.usage.cached_tokens

    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def progress(self) -> BatchProgress:
        return BatchProgress(
            total=self.total,
            done=self.skipped + self.succeeded + self.failed,
            skipped=self.skipped,
            succeeded=self.succeeded,
            failed=self.failed,
            in_flight=self.in_flight,
            retries=self.retries,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            elapsed_s=self.elapsed_s(),
        )

    def summary(self, *, concurrency: int, order: str) -> BatchSummary:
        wall_s = self.elapsed_s()
        latencies = sorted(self._latencies)
        return BatchSummary(
            requests=self.succeeded + self.failed,
            succeeded=self.succeeded,
            failed=self.failed,
            skipped=self.skipped,
            retries=self.retries,
            wall_s=wall_s,
            requests_per_s=_rate(self.succeeded + self.failed, wall_s),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            input_tokens_per_s=_rate(self.input_tokens, wall_s),
            output_tokens_per_s=_rate(self.output_tokens, wall_s),
            cached_share=self.cached_tokens / self.input_tokens if self.input_tokens else 0.0,
            latency_p50_s=_percentile(latencies, 0.50),
            latency_p90_s=_percentile(latencies, 0.90),
            latency_p99_s=_percentile(latencies, 0.99),
            errors_by_kind=dict(self.errors_by_kind),
            concurrency=concurrency,
            order=order,
        )


class _ProgressReporter:
    def __init__(self, callback: ProgressCallback | None, tally: _Tally) -> None:
        self._callback = callback
        self._tally = tally
        self._last = -math.inf

    def maybe_report(self) -> None:
        if self._callback is not None and time.monotonic() - self._last >= PROGRESS_INTERVAL_S:
            self.report()

    def report(self) -> None:
        if self._callback is not None:
            self._last = time.monotonic()
            self._callback(self._tally.progress())


async def _execute(
    endpoint: Endpoint,
    waves: Iterable[Iterable[BatchRequest]],
    sink: ResultSink,
    *,
    tally: _Tally,
    concurrency: int,
    max_retries: int,
    backoff: Backoff,
    request_timeout_s: float,
    on_progress: ProgressCallback | None,
) -> None:
    """Send the waves one after another, each through the same fixed pool of ``concurrency`` workers."""
    timeout = aiohttp.ClientTimeout(total=request_timeout_s, sock_connect=DEFAULT_CONNECT_TIMEOUT_S)
    reporter = _ProgressReporter(on_progress, tally)
    breaker = _Breaker(endpoint, max_retries=max_retries)
    async with _json_session(endpoint, connections=concurrency, timeout=timeout) as session:
        client = _Client(endpoint, session, tally, breaker, max_retries=max_retries, backoff=backoff)
        reporter.report()
        for wave in waves:
            requests = iter(wave)
            # The workers share one iterator: each takes the next request when it is free, so at most
            # `concurrency` requests exist at a time, however long the (possibly streamed) input is.
            workers = [_worker(requests, client, sink, tally, breaker, reporter) for _ in range(concurrency)]
            await _run_all(workers)
        reporter.report()


async def _worker(
    requests: Iterator[BatchRequest],
    client: _Client,
    sink: ResultSink,
    tally: _Tally,
    breaker: _Breaker,
    reporter: _ProgressReporter,
) -> None:
    for request in requests:
        tally.in_flight += 1
        try:
            result = await client.send(request)
        finally:
            tally.in_flight -= 1
        sink(result)
        tally.add(result)
        breaker.after(result)
        reporter.maybe_report()


async def _run_all(coroutines: Sequence[Awaitable[None]]) -> None:
    """Run the coroutines together; the first exception cancels the others and is raised as it is."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


def _percentile(ordered: list[float], share: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]
