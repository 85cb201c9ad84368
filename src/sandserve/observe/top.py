"""The model behind ``sandserve top``: which endpoints to watch (one, a fleet's gateway, autoscaler and
workers, or every endpoint up, re-read from the ledger at every tick so that workers that join or leave appear
or vanish), one reading of each per tick, rates between ticks, and a fleet gateway's own worker list."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from sandserve.endpoint import Endpoint
from sandserve.errors import SandserveError
from sandserve.observe.gateway_view import GatewayMetrics, gateway_metrics, gateway_workers
from sandserve.observe.loads import EndpointLoad, LoadProbe, rates
from sandserve.providers.handles import GatewayHandle, ScalerHandle
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Record, Registry, State


@dataclass(frozen=True)
class TopTarget:
    id: str
    role: str
    """endpoint, gateway, autoscaler or worker."""
    endpoint: Endpoint | None
    state: str
    created_at: float | None = None
    fleet: str | None = None
    model: str = ""
    engine: str = ""
    provider: str = ""
    metrics_url: str | None = None
    """A gateway's Prometheus metrics (where the fleet recorded its port)."""
    note: str | None = None
    """An autoscaler's last decision."""


@dataclass
class TopRow:
    id: str
    role: str
    fleet: str | None
    model: str
    engine: str
    provider: str
    state: str
    ok: bool
    error: str | None
    running: int | None
    queued: int | None
    token_usage: float | None
    cache_hit_rate: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    requests_per_s: float | None
    failed_readings: int
    """Readings of this endpoint that failed since top started."""
    age_s: float | None
    gateway_healthy: bool | None = None
    """A worker's health as its fleet's gateway sees it (None: not a worker, or the gateway did not say)."""
    gateway_load: int | None = None
    """Requests the gateway has routed to this worker and not seen finish."""
    workers_healthy: str | None = None
    """On a gateway row: healthy workers / workers the gateway lists."""
    error_responses: int | None = None
    """On a gateway row: answers it gave with a 4xx/5xx status since it started (from its metrics)."""
    note: str | None = None
    """On an autoscaler row: its last decision."""


@dataclass
class TopSnapshot:
    at: float
    rows: list[TopRow] = field(default_factory=list)
    notice: str | None = None
    """Why there is nothing to show (every endpoint went down, say)."""

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "rows": [asdict(row) for row in self.rows], "notice": self.notice}


def _target(record: Record, role: str, fleet: str | None = None) -> TopTarget:
    endpoint = record.endpoint
    handle = record.sandbox
    port = handle.prometheus_port if role == "gateway" and isinstance(handle, GatewayHandle) else None
    return TopTarget(
        id=record.id,
        role=role,
        endpoint=endpoint,
        state=record.shown_state,
        created_at=record.created_at,
        fleet=fleet,
        model=endpoint.model if endpoint else record.model,
        engine=record.engine,
        provider=record.provider,
        metrics_url=f"http://127.0.0.1:{port}/metrics" if isinstance(port, int) else None,
    )


def _scaler_target(record: Record, fleet: str) -> TopTarget:
    handle = record.sandbox
    state = handle.state if isinstance(handle, ScalerHandle) else {}
    return TopTarget(
        id=record.id,
        role="autoscaler",
        endpoint=None,
        state=record.shown_state,
        created_at=record.created_at,
        fleet=fleet,
        model=record.model,
        engine=record.engine,
        provider=record.provider,
        note=scaler_note(state),
    )


def scaler_note(state: dict[str, Any], *, now: float | None = None) -> str | None:
    """An autoscaler's last decision, as one line: ``up 4s ago: 3 request(s) queued ...``."""
    decisions = state.get("decisions") or []
    backoff = state.get("backoff")
    if backoff:
        return f"backing off ({backoff.get('seconds_left')} s left): {backoff.get('reason')}"
    if decisions:
        last = decisions[-1]
        ago = max(0.0, (now or time.time()) - float(last.get("at", 0.0)))
        worker = f" {last['worker']}" if last.get("worker") else ""
        return f"{last.get('action')}{worker} {ago:.0f}s ago: {last.get('reason')}"
    now_reason = state.get("now")
    return str(now_reason) if now_reason else None


def targets_for(ref: str | None = None, *, registry: Registry | None = None) -> list[TopTarget]:
    """``ref`` names an endpoint or a fleet (its gateway and every worker); None: every endpoint up, fleets
    expanded: the gateway, its autoscaler (never counted as a worker), then its workers. The environment's
    ENDPOINT counts when the ledger has nothing and no ref is given."""
    registry = registry or Registry()
    if ref is not None:
        records = [registry.resolve(ref)]
    else:
        records = [r for r in registry.list() if r.state is not State.DOWN]
        if not records:
            from_env = Endpoint.from_env()
            if from_env is not None:
                return [
                    TopTarget(
                        "env",
                        "endpoint",
                        from_env,
                        "ready",
                        model=from_env.model,
                        engine=from_env.engine,
                        provider=from_env.provider,
                    )
                ]
            registry.resolve(None)  # raises the error that says how to bring one up
    members = {record.id: registry.members_of(record.id) for record in records}
    worker_ids = {member.id for group in members.values() for member in group}
    found: list[TopTarget] = []
    for record in records:
        if record.id in worker_ids and ref is None:
            continue  # shown under its fleet
        if members[record.id]:
            record = lifecycle.refresh(record, registry)  # a fleet whose autoscaler died is degraded
            found.append(_target(record, "gateway", fleet=record.id))
            scalers = [m for m in members[record.id] if isinstance(m.sandbox, ScalerHandle)]
            found += [_scaler_target(scaler, record.id) for scaler in scalers]
            found += [
                _target(member, "worker", fleet=record.id)
                for member in members[record.id]
                if member not in scalers
            ]
        else:
            found.append(_target(record, "endpoint"))
    return found


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


class TopModel:
    """Reads every target once per ``sample()``; rates are between a target's last two readings.

    ``targets``: a fixed list, or a function that gives the current one (``lambda: targets_for(ref)``),
    called at every sample, so a worker an autoscaler adds appears and one it removes vanishes.
    """

    def __init__(
        self, targets: list[TopTarget] | Callable[[], list[TopTarget]], *, timeout: float = 3.0
    ) -> None:
        self._source = targets if callable(targets) else None
        self.targets: list[TopTarget] = [] if callable(targets) else targets
        self.timeout = timeout
        self._probe: LoadProbe | None = None
        self._session: aiohttp.ClientSession | None = None
        self._previous: dict[str, EndpointLoad] = {}
        self._failures: dict[str, int] = {}
        self._gateway_requests: dict[str, tuple[float, float]] = {}

    async def __aenter__(self) -> TopModel:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._probe = LoadProbe(timeout=self.timeout, session=self._session)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def sample(self) -> TopSnapshot:
        assert self._probe is not None and self._session is not None, "use `async with TopModel(...)`"
        notice = None
        if self._source is not None:
            try:
                self.targets = await asyncio.to_thread(self._source)
            except SandserveError as error:  # everything went down while watching: say so, keep watching
                self.targets, notice = [], error.message
        # A gateway reports no engine load of its own: its rows come from its worker list and metrics.
        engines = [t for t in self.targets if t.endpoint is not None and t.role != "gateway"]
        gateways = [t for t in self.targets if t.role == "gateway" and t.endpoint is not None]
        session = self._session
        loads, lists, metrics = await asyncio.gather(
            self._probe.read_many([t.endpoint for t in engines if t.endpoint is not None]),
            asyncio.gather(*(gateway_workers(session, g.endpoint) for g in gateways if g.endpoint)),
            asyncio.gather(*(gateway_metrics(session, g.metrics_url) for g in gateways)),
        )
        by_id = {t.id: load for t, load in zip(engines, loads, strict=True)}
        views = {
            g.id: _GatewayView(listed[0], listed[1], m)
            for g, listed, m in zip(gateways, lists, metrics, strict=True)
        }
        now = time.time()
        snapshot = TopSnapshot(at=now, notice=notice)
        for target in self.targets:
            if target.role == "autoscaler":
                snapshot.rows.append(self._scaler_row(target, now))
            elif target.role == "gateway" and target.id in views:
                snapshot.rows.append(self._gateway_row(target, views[target.id], now))
            else:
                row = self._row(target, by_id.get(target.id), now)
                if target.fleet in views:
                    _add_gateway_view(row, target, views[target.fleet])
                snapshot.rows.append(row)
        return snapshot

    def _row(self, target: TopTarget, load: EndpointLoad | None, now: float) -> TopRow:
        previous = self._previous.get(target.id)
        rate = rates(previous, load) if previous is not None and load is not None and load.ok else None
        if load is not None:
            if not load.ok:
                self._failures[target.id] = self._failures.get(target.id, 0) + 1
            else:
                self._previous[target.id] = load
        return TopRow(
            id=target.id,
            role=target.role,
            fleet=target.fleet,
            model=target.model,
            engine=target.engine,
            provider=target.provider,
            state=target.state,
            ok=bool(load and load.ok),
            error=load.error if load else _no_reading(target),
            running=load.running if load else None,
            queued=load.queued if load else None,
            token_usage=load.token_usage if load else None,
            cache_hit_rate=load.cache_hit_rate if load else None,
            prompt_tokens_per_s=rate.prompt_tokens_per_s if rate else None,
            # SGLang's own live figure where it gives one (its counter moves only as requests end).
            generation_tokens_per_s=_first_known(
                load.gen_throughput if load and load.ok else None,
                rate.generation_tokens_per_s if rate else None,
            ),
            requests_per_s=rate.requests_per_s if rate else None,
            failed_readings=self._failures.get(target.id, 0),
            age_s=now - target.created_at if target.created_at else None,
        )

    def _scaler_row(self, target: TopTarget, now: float) -> TopRow:
        row = self._row(target, None, now)
        row.ok, row.error, row.note = target.state == "ready", None, target.note
        return row

    def _gateway_row(self, target: TopTarget, view: _GatewayView, now: float) -> TopRow:
        row = self._row(target, None, now)
        row.ok = view.workers is not None
        row.error = view.error
        if not row.ok:
            self._failures[target.id] = self._failures.get(target.id, 0) + 1
            row.failed_readings = self._failures[target.id]
        if view.workers is not None:
            healthy = len([w for w in view.workers if w.get("is_healthy", w.get("healthy"))])
            row.workers_healthy = f"{healthy}/{len(view.workers)}"
            loads = [
                int(w["load"]) for w in view.workers if isinstance(w.get("load"), int) and w["load"] >= 0
            ]
            row.gateway_load = sum(loads) if loads else None
        if view.metrics is not None:
            row.error_responses = view.metrics.error_responses
            if view.metrics.active_by_worker:
                row.running = sum(view.metrics.active_by_worker.values())
            requests = view.metrics.requests_total
            before = self._gateway_requests.get(target.id)
            clock = time.monotonic()
            if requests is not None:
                if before is not None and requests >= before[1] and clock > before[0]:
                    row.requests_per_s = (requests - before[1]) / (clock - before[0])
                self._gateway_requests[target.id] = (clock, requests)
        return row


def _no_reading(target: TopTarget) -> str | None:
    """Why a target without a load reading has none (nothing to say while it boots)."""
    if target.endpoint is not None or target.state in ("booting", "down"):
        return None
    return "no endpoint recorded"


def _first_known(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


@dataclass
class _GatewayView:
    workers: list[dict[str, Any]] | None
    error: str | None
    metrics: GatewayMetrics | None


def _add_gateway_view(row: TopRow, target: TopTarget, view: _GatewayView) -> None:
    """A worker's health and load as its fleet's gateway sees it."""
    if target.endpoint is None:
        return
    url = target.endpoint.url.rstrip("/")
    match = next((w for w in view.workers or () if _same_url(str(w.get("url", "")), url)), None)
    if match is not None:
        health = match.get("is_healthy", match.get("healthy"))
        row.gateway_healthy = bool(health) if health is not None else None
        load = match.get("load")
        row.gateway_load = int(load) if isinstance(load, int) and load >= 0 else None
    if view.metrics is not None:
        if url in view.metrics.active_by_worker:
            row.gateway_load = view.metrics.active_by_worker[url]
        if row.gateway_healthy is None and url in view.metrics.healthy_by_worker:
            row.gateway_healthy = view.metrics.healthy_by_worker[url]


async def snapshot_once(
    targets: list[TopTarget] | Callable[[], list[TopTarget]], *, interval: float = 1.0
) -> TopSnapshot:
    """Two readings ``interval`` apart (so the rates are real), the second returned."""
    async with TopModel(targets) as model:
        await model.sample()
        await asyncio.sleep(interval)
        return await model.sample()


def load_endpoints_for(ref: str | None, *, registry: Registry | None = None) -> list[Endpoint] | None:
    """Whose load a benchmark of ``ref`` should sample: a fleet's workers (its gateway reports none of the
    engines' load), else None (the endpoint itself)."""
    if ref is None:
        return None
    targets = targets_for(ref, registry=registry)
    workers = [t.endpoint for t in targets if t.role == "worker" and t.endpoint is not None]
    return workers or None
