"""A fleet gateway's own view, for `top`: its worker list (``GET /workers``) and its Prometheus metrics.

Read from the gateway the fleet runs (SGLang Model Gateway: ``sglang-router`` / ``smg``, whose metric names
start ``smg_``; older builds used ``sgl_router_``): requests it routed, the answers it gave with an error
status, and per worker its health and requests in flight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sandserve.client.transport import utf8_text
from sandserve.endpoint import Endpoint
from sandserve.observe.prometheus import parse_metrics, total

_REQUESTS = ("smg_router_requests_total", "sgl_router_requests_total")
_RESPONSES = ("smg_http_responses_total", "sgl_router_http_responses_total")
_ACTIVE = ("smg_worker_requests_active", "sgl_router_worker_requests_active")
_HEALTH = ("smg_worker_health", "sgl_router_worker_health")


@dataclass
class GatewayMetrics:
    requests_total: float | None = None
    """Requests the gateway routed since it started."""
    error_responses: int | None = None
    """Answers it gave with a 4xx or 5xx status since it started."""
    active_by_worker: dict[str, int] = field(default_factory=dict)
    healthy_by_worker: dict[str, bool] = field(default_factory=dict)


def parse_gateway_metrics(text: str) -> GatewayMetrics:
    samples = parse_metrics(text)
    metrics = GatewayMetrics(requests_total=total(samples, *_REQUESTS))
    for name in _RESPONSES:
        if name in samples:
            metrics.error_responses = round(
                sum(s.value for s in samples[name] if s.labels.get("status_code", "")[:1] in ("4", "5"))
            )
            break
    for name in _ACTIVE:
        for sample in samples.get(name, ()):
            metrics.active_by_worker[sample.labels.get("worker", "").rstrip("/")] = round(sample.value)
    for name in _HEALTH:
        for sample in samples.get(name, ()):
            metrics.healthy_by_worker[sample.labels.get("worker", "").rstrip("/")] = sample.value >= 1
    return metrics


async def gateway_workers(
    session: aiohttp.ClientSession, gateway: Endpoint
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The gateway's ``GET /workers`` list (``{"workers": [{"url", "is_healthy", "load", ...}]}``), or None
    and why."""
    headers = gateway.probe_request_headers()
    try:
        async with session.get(gateway.url + "/workers", headers=headers) as response:
            if response.status != 200:
                return None, f"the gateway's /workers answered {response.status}"
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None, f"the gateway's /workers did not answer ({type(exc).__name__})"
    try:
        body = json.loads(utf8_text(raw, "the gateway's /workers"))
    except ValueError as exc:
        reason = str(exc) if "UTF-8" in str(exc) else f"the gateway's /workers is not JSON: {raw[:80]!r}"
        return None, reason
    workers = body.get("workers") if isinstance(body, dict) else None
    if not isinstance(workers, list):
        return None, "the gateway's /workers is not a worker list"
    return [w for w in workers if isinstance(w, dict)], None


async def gateway_metrics(session: aiohttp.ClientSession, url: str | None) -> GatewayMetrics | None:
    """The gateway's Prometheus metrics at ``url``, its own port on this machine (None when it has none or
    does not answer)."""
    if url is None:
        return None
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return None
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    try:
        return parse_gateway_metrics(utf8_text(raw, "the gateway's metrics"))
    except ValueError:
        return None  # no metrics to show, as when it has none
