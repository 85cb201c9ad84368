"""The batch files: the input read and checked, the output (and its error file) resumed, locked and appended.

Layout, as the OpenAI Batch API's: ``OUT`` holds the successful answers, ``OUT.errors.jsonl`` the requests
that ended in an error the server gave for the request itself (a 4xx with an error body) or that are not
valid requests; both use the OpenAI output line. Keeping them apart means OUT is only ever appended to
(never rewritten, even by ``--retry-errors``), and that joining OUT on custom_id gives answers only.
``OUT.summary.json`` holds the last run's summary, and ``OUT.lock`` exists while a run writes OUT. All of
them sit next to OUT's real file, so a symlinked OUT keeps one set whatever name reaches it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sandserve.batch.types import SUPPORTED_URLS, BatchRequest, BatchResult, ResultError, dumps, loads
from sandserve.errors import BatchInputError, BatchOutputError
from sandserve.paths import advice_for, write_error

#: How every output line this runner writes begins (orjson keeps key order): a torn last line that begins
#: so is ours, and is cut off; anything else at the end of OUT means the file is not a batch output.
OUTPUT_LINE_START = b'{"id":"batch_req_'
_OUTPUT_LINE_STARTS = (OUTPUT_LINE_START, b'{"id": "batch_req_')


def real_output_path(output_path: str | os.PathLike[str]) -> Path:
    """OUT's real file: a symlink is followed (and kept), so that each file has one lock and one set of
    sidecars."""
    return Path(os.path.realpath(os.fspath(output_path)))


def summary_path(output_path: str | os.PathLike[str]) -> Path:
    """Where run_batch writes the summary of a run that writes ``output_path``."""
    return Path(f"{real_output_path(output_path)}.summary.json")


def errors_path(output_path: str | os.PathLike[str]) -> Path:
    """Where run_batch writes the requests that ended in an error (the OpenAI batch error file)."""
    return Path(f"{real_output_path(output_path)}.errors.jsonl")


def lock_path(output_path: str | os.PathLike[str]) -> Path:
    return Path(f"{real_output_path(output_path)}.lock")


# --- reading the input file ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """An input line that is not a usable request; it becomes an error line."""

    line_number: int
    custom_id: str
    message: str
    named_by_line: bool = False
    """The line has no custom_id of its own: ``custom_id`` is made from its line number."""

    def to_result(self) -> BatchResult:
        return BatchResult(custom_id=self.custom_id, error=ResultError("invalid_input", self.message))


def parse_input_line(line: bytes | str, line_number: int) -> BatchRequest | InvalidLine | None:
    """One line of an OpenAI batch file; None for a blank line."""
    if not line.strip():
        return None
    fallback_id = f"line-{line_number}"
    try:
        item = loads(line)
    except ValueError as error:
        return InvalidLine(line_number, fallback_id, f"line {line_number}: not valid JSON ({error})", True)
    if not isinstance(item, dict):
        return InvalidLine(line_number, fallback_id, f"line {line_number}: expected a JSON object", True)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return InvalidLine(line_number, fallback_id, f"line {line_number}: missing custom_id", True)
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


def read_input(path: Path) -> Generator[tuple[int, int, BatchRequest | InvalidLine], None, None]:
    """(line number, byte offset, request or invalid line) for every non-blank line, streamed."""
    try:
        file = path.open("rb")
    except OSError as error:
        raise BatchInputError(path, error.strerror or str(error)) from error
    with file:
        try:
            offset = 0
            for line_number, line in enumerate(file, start=1):
                parsed = parse_input_line(line, line_number)
                if parsed is not None:
                    yield line_number, offset, parsed
                offset += len(line)
        except OSError as error:
            raise BatchInputError(path, error.strerror or str(error)) from error


def read_request_at(file: BinaryIO, offset: int) -> BatchRequest:
    """The request on the line at ``offset`` (found valid by an earlier scan of the same file)."""
    file.seek(offset)
    parsed = parse_input_line(file.readline(), 0)
    assert isinstance(parsed, BatchRequest), "the input file changed while the batch ran"
    return parsed


@contextlib.contextmanager
def streamed_requests(path: Path, finished: set[str]) -> Iterator[Iterator[BatchRequest]]:
    """The input file's valid, unfinished requests, read as they are needed; the file closes on abort too."""
    lines = read_input(path)
    try:
        yield (
            item for _, _, item in lines if isinstance(item, BatchRequest) and item.custom_id not in finished
        )
    finally:
        lines.close()


@dataclass
class InputScan:
    count: int = 0
    ids: set[str] = field(default_factory=set)
    invalid: list[InvalidLine] = field(default_factory=list)
    """Every invalid line, with a custom_id that no real request uses."""
    to_send: list[tuple[int, BatchRequest]] = field(default_factory=list)
    """(offset, request) of the requests still to send, only when asked to keep them (prefix order)."""


def scan_input(path: Path, *, keep: Any = None) -> InputScan:
    """Count and check the input before anything is sent: duplicates stop the run here, with OUT untouched.

    ``keep(offset, request)`` is called for each valid request (prefix order keeps a key and the offset).
    """
    scan = InputScan()
    duplicates: list[tuple[str, int]] = []
    unnamed: list[InvalidLine] = []
    for line_number, offset, item in read_input(path):
        scan.count += 1
        if isinstance(item, InvalidLine) and item.named_by_line:
            unnamed.append(item)
            continue
        if item.custom_id in scan.ids:
            duplicates.append((item.custom_id, line_number))
        scan.ids.add(item.custom_id)
        if isinstance(item, InvalidLine):
            scan.invalid.append(item)
        elif keep is not None:
            keep(offset, item)
    if duplicates:
        shown = ", ".join(f"{custom_id!r} (again on line {line})" for custom_id, line in duplicates[:5])
        more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        raise BatchInputError(
            path,
            f"duplicate custom_id {shown}{more}",
            hint="Give every request its own custom_id: results are matched on it.",
        )
    for line in unnamed:  # named after the scan, so that a real custom_id "line-1" keeps its name
        custom_id = line.custom_id
        while custom_id in scan.ids:
            custom_id += "-invalid"
        scan.ids.add(custom_id)
        scan.invalid.append(InvalidLine(line.line_number, custom_id, line.message, True))
    if scan.count == 0:
        raise BatchInputError(
            path,
            "it holds no requests (it is empty or has only blank lines)",
            hint='Write one {"custom_id", "method", "url", "body"} object per line.',
        )
    return scan


# --- the output files ----------------------------------------------------------------------------------


@dataclass
class PreviousOutput:
    succeeded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    failed_in_output: bool = False
    """OUT itself holds error lines (written by an earlier version of sandserve, which kept them there)."""


def read_finished_ids(output_path: str | os.PathLike[str]) -> tuple[set[str], set[str]]:
    """The custom_ids a batch output (and its error file) holds: (succeeded, failed). Torn lines don't
    count."""
    previous = read_previous_output(Path(output_path))
    return previous.succeeded, previous.failed


def read_previous_output(output_path: Path) -> PreviousOutput:
    """What OUT and its error file already hold, after checking that they are batch outputs.

    Raises BatchOutputError, touching nothing, for a file that is not one: a line that is not an output line,
    or a torn last line that this runner did not write. ``check_belongs`` then compares it with the input.
    """
    previous = PreviousOutput()
    for path in (real_output_path(output_path), errors_path(output_path)):
        for custom_id, ok in _output_lines(path, output_path):
            if ok:
                previous.succeeded.add(custom_id)
            else:
                previous.failed.add(custom_id)
                previous.failed_in_output |= path == real_output_path(output_path)
    previous.failed -= previous.succeeded
    return previous


def check_belongs(previous: PreviousOutput, input_ids: set[str], output_path: Path) -> None:
    """Refuse, touching nothing, an output whose custom_ids are not all in the input: it is another file."""
    for custom_id in previous.succeeded | previous.failed:
        if custom_id not in input_ids:
            raise BatchOutputError(
                output_path,
                f"it is not a batch output of this input: it holds custom_id {custom_id!r}, which the input "
                "does not have; it was left as it is",
                hint="Pick another output path (a new one is created), or move that file aside.",
            )


def _output_lines(path: Path, shown_as: Path) -> Generator[tuple[str, bool], None, None]:
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as error:
        raise BatchOutputError(shown_as, error.strerror or str(error), hint=advice_for(error)) from error

    def foreign(line_number: int, why: str) -> BatchOutputError:
        return BatchOutputError(
            shown_as,
            f"{path} is not a batch output of this input: line {line_number} {why}; it was left as it is",
            hint="Pick another output path (a new one is created), or move that file aside.",
        )

    with file:
        for line_number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                if not line.startswith(_OUTPUT_LINE_STARTS):
                    raise foreign(line_number, "is not an output line")
                return  # a line torn by a crash: cut off when the file is opened for writing
            entry = parse_output_line(line)
            if entry is None:
                raise foreign(line_number, "is not an OpenAI batch output line")
            yield entry


def parse_output_line(line: bytes) -> tuple[str, bool] | None:
    """(custom_id, succeeded) of a whole output line; None for anything else."""
    try:
        item = loads(line)
    except ValueError:
        return None
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("custom_id"), str)
        or not ("response" in item and "error" in item)
    ):
        return None
    return item["custom_id"], item.get("error") is None


class OutputLock:
    """An exclusive lock on OUT for the length of a run (flock on ``OUT.lock``, which names the holder's pid).

    The kernel drops the lock when its holder dies, however it dies: a stale lock file never blocks a run.
    """

    def __init__(self, output_path: Path) -> None:
        self.output_path = output_path
        self.path = lock_path(output_path)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as error:
                raise BatchOutputError(
                    self.output_path, error.strerror or str(error), hint=advice_for(error)
                ) from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise BatchOutputError(
                        self.output_path, error.strerror or str(error), hint=advice_for(error)
                    ) from error
                raise BatchOutputError(
                    self.output_path,
                    f"another sandserve batch (pid {holder}) is writing it right now",
                    hint="Wait for that run to finish (or stop it), then run again: what it finished is "
                    "skipped. Two runs on one output would send every request twice.",
                ) from None
            # The previous holder may have removed the file between our open and our lock: then retry.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None


class JsonlSink:
    """Appends each result as one OpenAI batch output line, flushed at once: a crash leaves only whole lines.

    Opening it cuts off a partial last line left by an earlier crash (that request is simply run again), and,
    with ``drop_errors``, removes the error lines so that those requests can be retried without duplicates.
    A symlinked path is written through (the link stays a link).
    """

    def __init__(self, path: str | os.PathLike[str], *, drop_errors: bool = False) -> None:
        self.path = Path(path)
        self._drop_errors = drop_errors
        self._file: Any = None

    def open(self) -> None:
        real = real_output_path(self.path)
        try:
            if self._drop_errors:
                drop_error_lines(real)
            else:
                truncate_partial_last_line(real)
            self._file = real.open("ab", buffering=0)
        except OSError as error:
            raise BatchOutputError(self.path, error.strerror or str(error), hint=advice_for(error)) from error

    def __enter__(self) -> JsonlSink:
        self.open()
        return self

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, result: BatchResult) -> None:
        if self._file is None:
            raise RuntimeError("JsonlSink is not open: use it in a with block")
        data = memoryview(dumps(result.to_output_line()) + b"\n")
        # One unbuffered write per line: normally a single write(2), so a killed process never leaves half
        # a line behind; the loop only matters for the rare short write. A line torn by a full disk is cut
        # off when the file is next opened.
        try:
            while data:
                data = data[self._file.write(data) :]
        except OSError as error:
            raise BatchOutputError(self.path, error.strerror or str(error), hint=advice_for(error)) from error


class BatchOutputSink:
    """Successes to OUT, final errors to OUT.errors.jsonl (created only when the first error comes)."""

    def __init__(self, output_path: Path, *, retry_errors: bool, errors_in_output: bool) -> None:
        self.output = JsonlSink(output_path, drop_errors=retry_errors and errors_in_output)
        self.errors_path = errors_path(output_path)
        self.errors = JsonlSink(self.errors_path, drop_errors=retry_errors)
        self._errors_open = False

    def __enter__(self) -> BatchOutputSink:
        self.output.open()
        if self.errors_path.exists():
            self._open_errors()
        return self

    def _open_errors(self) -> None:
        self.errors.open()
        self._errors_open = True

    def __exit__(self, *exc_info: object) -> None:
        self.output.close()
        self.errors.close()
        with contextlib.suppress(OSError):
            if self.errors_path.stat().st_size == 0:  # every error was retried and answered
                self.errors_path.unlink()

    def __call__(self, result: BatchResult) -> None:
        if result.ok:
            self.output(result)
            return
        if not self._errors_open:
            self._open_errors()
        self.errors(result)


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


def drop_error_lines(path: Path) -> None:
    """Rewrite the file without its error lines (and any partial tail), atomically, keeping its mode."""
    if not path.exists():
        return
    mode = path.stat().st_mode & 0o7777
    with (
        path.open("rb") as source,
        tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as target,
    ):
        for line in source:
            entry = parse_output_line(line) if line.endswith(b"\n") else None
            if entry is not None and entry[1]:
                target.write(line)
        target.flush()
        os.fsync(target.fileno())
    os.chmod(target.name, mode)
    os.replace(target.name, path)


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    try:
        with tempfile.NamedTemporaryFile(
            "wb", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as file:
            file.write(dumps(data))
        os.replace(file.name, path)
    except OSError as error:
        raise BatchOutputError(path, error.strerror or str(error), hint=advice_for(error)) from error


def check_paths(input_path: Path, output_path: Path) -> None:
    if not input_path.exists():
        raise BatchInputError(input_path, "no such file")
    if not input_path.is_file():
        raise BatchInputError(input_path, "not a regular file")
    if output_path.exists() and output_path.samefile(input_path):
        raise BatchOutputError(output_path, "it is the input file")
    if output_path.is_dir():
        raise BatchOutputError(output_path, "it is a directory")
    if output_path.exists() and not output_path.is_file():
        raise BatchOutputError(output_path, "it is not a regular file")
    real = real_output_path(output_path)
    if not real.parent.is_dir():
        raise BatchOutputError(output_path, f"the directory {real.parent} does not exist")
    error = write_error(real.parent)
    if error is not None:
        why = f"cannot write in {real.parent}: {error.strerror or error}"
        raise BatchOutputError(output_path, why, hint=advice_for(error))
