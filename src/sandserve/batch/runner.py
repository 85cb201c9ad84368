"""Run a batch of OpenAI-style requests against an Endpoint: bounded, retried, resumable, nothing lost.

Input is the OpenAI batch format (JSONL, one request per line). Each request that gets a final answer is
appended and flushed as one whole line as soon as it has it: a success to OUT, an error the server gave for
the request itself to OUT.errors.jsonl (see ``batch.files``). A request with no final answer (the endpoint
went away, timeouts, 5xx after every retry) gets no line at all, so running the same batch again, against
the same endpoint or a new one, sends it again: a plain rerun always completes the batch, and finished
custom_ids are skipped. When requests are left without a result the run raises BatchIncompleteError (the
CLI's exit code 3) saying how many. Output order is not input order: join on custom_id.

``order="input"`` streams the input file, so memory stays flat however long it is (only the custom_ids are
kept, to catch duplicates and to resume). ``order="prefix"`` keeps a short prefix key and the line's offset
per request (never the bodies), so that one request of each shared-prefix group can go first.

The library never prints: progress goes to the ``on_progress`` callback, the outcome to the returned
:class:`BatchSummary` (also written next to the output as ``OUT.summary.json``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiohttp

from sandserve.batch.files import (
    BatchOutputSink,
    OutputLock,
    check_belongs,
    check_paths,
    read_previous_output,
    read_request_at,
    scan_input,
    streamed_requests,
    summary_path,
    write_json_atomically,
)
from sandserve.batch.http import Client, Unfinished, Watcher, json_session, preflight
from sandserve.batch.pace import Aimd, InFlightGate, paced
from sandserve.batch.prefix import offset_collector, plan_prefix_waves, plan_waves
from sandserve.batch.tally import ProgressReporter, Tally
from sandserve.batch.types import (
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT_S,
    MAX_DEFAULT_CONCURRENCY,
    ORDERS,
    SGLANG_LPM_WAITING_LIMIT,
    Backoff,
    BatchRequest,
    BatchSummary,
    Order,
    ProgressCallback,
    ResultSink,
)
from sandserve.endpoint import Endpoint
from sandserve.engines.priority import BATCH_PRIORITY, Priority, check_priority
from sandserve.errors import BatchIncompleteError, ConfigError, EndpointUnavailableError

DEFAULT_BACKOFF = Backoff()
#: After this many requests in a row ended without a final answer, the endpoint is taken to be broken.
GIVE_UP_AFTER_CONSECUTIVE_FAILURES = 10
#: Endpoint.info keys (set at boot) that describe the server's capacity, first match wins.
INFO_MAX_RUNNING_REQUESTS = ("max_running_requests",)
INFO_KV_POOL_TOKENS = ("kv_pool_tokens", "max_total_num_tokens")


#: ``stopped_because`` of a run stopped by Ctrl-C (its summary is written before the interrupt goes on).
INTERRUPTED_REASON = "interrupted (Ctrl-C)"


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
    backoff: Backoff = DEFAULT_BACKOFF,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
    priority: Priority = BATCH_PRIORITY,
) -> BatchSummary:
    """Send every request of the batch file ``input_path``; successes go to ``output_path``, errors to
    ``errors_path(output_path)``.

    Requests already answered are skipped (resume); with ``retry_errors`` the error lines are removed and
    those requests sent again. Malformed input lines become error lines naming their line number; duplicate
    custom_ids stop the run before anything is sent. One run at a time writes an output (a second is
    refused, naming the first's pid), and a file that is not a batch output of this input is refused and
    left as it is. Raises BatchInputError, BatchOutputError, ConfigError for bad arguments,
    EndpointUnavailableError when the endpoint cannot be reached before the first request, and
    BatchIncompleteError (after writing the summary) when requests are left without a result. Chat and
    completions bodies without a ``model`` get the endpoint's.

    Every request carries ``priority`` (low: people's requests to the same endpoint go first) unless its
    body names one. With ``concurrency`` left out, the in-flight count also follows the endpoint's queue
    (batch.pace): it drops while higher-priority requests wait there and climbs back when they stop.
    """
    started = time.monotonic()
    input_path, output_path = Path(input_path), Path(output_path)
    _check_settings(order, max_retries, request_timeout_s)
    priority = check_priority(priority)
    adaptive = concurrency is None
    concurrency = _resolve_concurrency(endpoint, concurrency)
    check_paths(input_path, output_path)
    with OutputLock(output_path):
        previous = read_previous_output(output_path)
        finished = previous.succeeded if retry_errors else previous.succeeded | previous.failed
        keyed, keep_key = offset_collector()

        def keep(offset: int, request: BatchRequest) -> None:
            if request.custom_id not in finished:
                keep_key(offset, request)

        scan = scan_input(input_path, keep=keep if order == "prefix" else None)
        check_belongs(previous, scan.ids, output_path)
        invalid = [line for line in scan.invalid if line.custom_id not in finished]
        tally = Tally(total=scan.count, skipped=len(finished), started=started)
        if scan.count - len(finished) - len(invalid) > 0:
            await preflight(endpoint, max_retries=max_retries, backoff=backoff)
        run = functools.partial(
            _execute,
            endpoint,
            tally=tally,
            concurrency=concurrency,
            max_retries=max_retries,
            backoff=backoff,
            request_timeout_s=request_timeout_s,
            on_progress=on_progress,
            priority=priority,
            adaptive=adaptive,
        )
        sink = BatchOutputSink(
            output_path, retry_errors=retry_errors, errors_in_output=previous.failed_in_output
        )
        with sink:
            for line in invalid:
                result = line.to_result()
                sink(result)
                tally.add(result)
            try:
                if order == "prefix":
                    waves = plan_waves(keyed, kv_pool_tokens=_info_count(endpoint, INFO_KV_POOL_TOKENS))
                    del keyed
                    with input_path.open("rb") as file:
                        await run(
                            [(read_request_at(file, offset) for offset in wave) for wave in waves], sink
                        )
                else:
                    with streamed_requests(input_path, finished) as requests:
                        await run([requests], sink)
            except EndpointUnavailableError as error:
                tally.stopped_because = error.message
            except asyncio.CancelledError:  # Ctrl-C: the summary of what was done is written all the same
                tally.stopped_because = INTERRUPTED_REASON
                interrupted = tally.summary(concurrency=concurrency, order=order, priority=priority)
                write_json_atomically(summary_path(output_path), interrupted.to_dict())
                raise
        summary = tally.summary(concurrency=concurrency, order=order, priority=priority)
        write_json_atomically(summary_path(output_path), summary.to_dict())
    if not summary.complete:
        raise _incomplete(summary, scan.count)
    return summary


async def run_requests(
    endpoint: Endpoint,
    requests: Iterable[BatchRequest],
    sink: ResultSink,
    *,
    concurrency: int | None = None,
    order: Order = "input",
    max_retries: int = DEFAULT_MAX_RETRIES,
    backoff: Backoff = DEFAULT_BACKOFF,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
    priority: Priority = BATCH_PRIORITY,
    adaptive: bool | None = None,
) -> BatchSummary:
    """Send requests built in code; ``sink`` receives each final BatchResult as it comes (in finishing order).

    ``requests`` is consumed lazily in input order (a generator keeps memory flat); ``order="prefix"``
    materialises it. Pass an open ``JsonlSink(path)`` as the sink to write an OpenAI batch output file (with
    ``read_finished_ids(path)`` to leave out what an earlier run finished), or a list's ``append`` to keep the
    results. Requests left without a final answer reach no sink: BatchIncompleteError says how many.
    ``priority`` and the load-following in-flight count are as in :func:`run_batch`; ``adaptive`` (default:
    when ``concurrency`` is left out) makes ``concurrency`` a ceiling that the batch drops below while
    higher-priority requests wait.
    """
    _check_settings(order, max_retries, request_timeout_s)
    priority = check_priority(priority)
    adaptive = concurrency is None if adaptive is None else adaptive
    concurrency = _resolve_concurrency(endpoint, concurrency)
    if order == "prefix":
        requests = list(requests)
    total = len(requests) if isinstance(requests, Sized) else None
    unique = _reject_duplicates(requests)
    waves: list[Iterable[BatchRequest]] = [unique]
    if order == "prefix":
        kv_pool = _info_count(endpoint, INFO_KV_POOL_TOKENS)
        waves = list(plan_prefix_waves(list(unique), kv_pool_tokens=kv_pool))
    tally = Tally(total=total, skipped=0, started=time.monotonic())
    if total != 0:
        await preflight(endpoint, max_retries=max_retries, backoff=backoff)
    try:
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
            priority=priority,
            adaptive=adaptive,
        )
    except EndpointUnavailableError as error:
        tally.stopped_because = error.message
        if total is None:
            tally.unknown_remaining = True
    summary = tally.summary(concurrency=concurrency, order=order, priority=priority)
    if not summary.complete:
        raise _incomplete(summary, total)
    return summary


def _incomplete(summary: BatchSummary, total: int | None) -> BatchIncompleteError:
    reason = summary.stopped_because or (
        "they got no final answer after every retry (latest: "
        + "; ".join(list(summary.pending_examples.values())[:1])
        + ")"
    )
    return BatchIncompleteError(unfinished=summary.unfinished, total=total, reason=reason, summary=summary)


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


def _check_settings(order: str, max_retries: int, request_timeout_s: float) -> None:
    if order not in ORDERS:
        raise ConfigError(f"Unknown batch order {order!r}.", hint="Use 'input' or 'prefix'.")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be a whole number of 0 or more (got {max_retries!r}).")
    if not (isinstance(request_timeout_s, (int, float)) and math.isfinite(request_timeout_s)) or (
        request_timeout_s <= 0
    ):
        raise ConfigError(
            f"The request timeout must be a positive number of seconds (got {request_timeout_s!r}).",
            hint="It bounds each attempt of each request; the default is 600 s.",
        )


def _resolve_concurrency(endpoint: Endpoint, concurrency: int | None) -> int:
    if concurrency is None:
        return default_concurrency(endpoint)
    if concurrency < 1:
        raise ConfigError(
            f"Concurrency must be at least 1 (got {concurrency}).",
            hint="Leave it out to size it from the server's capacity.",
        )
    return concurrency


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


# --- running -------------------------------------------------------------------------------------------


async def _execute(
    endpoint: Endpoint,
    waves: Iterable[Iterable[BatchRequest]],
    sink: ResultSink,
    *,
    tally: Tally,
    concurrency: int,
    max_retries: int,
    backoff: Backoff,
    request_timeout_s: float,
    on_progress: ProgressCallback | None,
    priority: Priority = BATCH_PRIORITY,
    adaptive: bool = False,
) -> None:
    """Send the waves one after another, each through the same pool of ``concurrency`` workers, of which
    as many send at once as the gate lets through (all, unless the run follows the endpoint's load)."""
    timeout = aiohttp.ClientTimeout(total=request_timeout_s, sock_connect=DEFAULT_CONNECT_TIMEOUT_S)
    reporter = ProgressReporter(on_progress, tally)
    tally.pace = Aimd(concurrency) if adaptive else None
    gate = InFlightGate(concurrency)
    async with (
        json_session(endpoint, connections=concurrency, timeout=timeout) as session,
        paced(endpoint, priority, tally.pace, gate),
    ):
        client = Client(
            endpoint,
            session,
            Watcher(),
            max_retries=max_retries,
            backoff=backoff,
            on_retry=tally.count_retry,
            priority=priority,
        )
        reporter.report()
        try:
            for wave in waves:
                requests = iter(wave)
                # The workers share one iterator: each takes the next request when it is let through, so at
                # most `concurrency` requests exist at a time, however long the (possibly streamed) input is.
                workers = [
                    _worker(endpoint, requests, client, sink, tally, reporter, gate)
                    for _ in range(concurrency)
                ]
                await _run_all(workers)
        finally:
            reporter.report()


async def _worker(
    endpoint: Endpoint,
    requests: Iterator[BatchRequest],
    client: Client,
    sink: ResultSink,
    tally: Tally,
    reporter: ProgressReporter,
    gate: InFlightGate,
) -> None:
    while True:
        async with gate:
            request = next(requests, None)
            if request is None:
                return
            tally.in_flight += 1
            try:
                outcome = await client.send(request)
            finally:
                tally.in_flight -= 1
        if isinstance(outcome, Unfinished):
            tally.give_up(outcome)
            if tally.consecutive_unfinished >= GIVE_UP_AFTER_CONSECUTIVE_FAILURES:
                raise EndpointUnavailableError(
                    endpoint.url,
                    f"the last {tally.consecutive_unfinished} requests all got no answer after "
                    f"every retry (latest: {outcome.reason})",
                )
        else:
            sink(outcome)
            tally.add(outcome)
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
