"""How busy a worker is, read from the engine's own load endpoint: what the autoscaler and ``fleet status`` use.

Both engines publish Prometheus text at ``/metrics`` (sandserve starts llama-server with ``--metrics`` and
SGLang with ``--enable-metrics``): llama.cpp ``llamacpp:requests_processing`` / ``requests_deferred`` /
``prompt_tokens_total`` / ``prompt_tokens_cached_total``; SGLang ``sglang:num_running_reqs`` /
``sglang:num_queue_reqs`` / ``sglang:cache_hit_rate``. Every probe carries Daytona's skip-activity header, so
reading a worker's load never keeps an idle sandbox alive: idling workers down is the autoscaler's decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import httpx

from sandserve.endpoint import Endpoint

#: Daytona's preview proxy does not count a request carrying this header as activity (auto-stop still applies).
SKIP_ACTIVITY_HEADER = "X-Daytona-Skip-Last-Activity-Update"
LOAD_TIMEOUT = 5.0

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)", re.MULTILINE)
_RUNNING = ("llamacpp:requests_processing", "sglang:num_running_reqs")
_QUEUED = ("llamacpp:requests_deferred", "sglang:num_queue_reqs")


@dataclass(frozen=True)
class WorkerLoad:
    """One worker's load at one moment, as its engine reports it."""

    running: int
    queued: int
    cache_hit_rate: float | None = None

    @property
    def busy(self) -> bool:
        return self.running + self.queued > 0


class LoadSource(Protocol):
    """Where the autoscaler reads loads from (a worker's endpoint in, its load or None if it did not answer)."""

    def __call__(self, endpoint: Endpoint) -> WorkerLoad | None: ...


def probe_headers(endpoint: Endpoint) -> dict[str, str]:
    return {**endpoint.request_headers(), SKIP_ACTIVITY_HEADER: "true"}


def read_load(endpoint: Endpoint, client: httpx.Client | None = None) -> WorkerLoad | None:
    """The worker's running and queued requests and its cache hit rate; None when it does not answer."""
    try:
        if client is None:
            response = httpx.get(
                endpoint.url + "/metrics", headers=probe_headers(endpoint), timeout=LOAD_TIMEOUT
            )
        else:
            response = client.get(endpoint.url + "/metrics", headers=probe_headers(endpoint))
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_metrics(response.text)


def parse_metrics(text: str) -> WorkerLoad | None:
    samples: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        try:
            samples[name] = samples.get(name, 0.0) + float(value)
        except ValueError:
            continue
    running = next((samples[name] for name in _RUNNING if name in samples), None)
    queued = next((samples[name] for name in _QUEUED if name in samples), None)
    if running is None or queued is None:
        return None
    return WorkerLoad(running=int(running), queued=int(queued), cache_hit_rate=_cache_hit_rate(samples))


def _cache_hit_rate(samples: dict[str, float]) -> float | None:
    if "sglang:cache_hit_rate" in samples:
        return samples["sglang:cache_hit_rate"]
    # llama.cpp counts the prompt tokens it processed and, apart, those it took from its cache.
    processed = samples.get("llamacpp:prompt_tokens_total")
    cached = samples.get("llamacpp:prompt_tokens_cached_total")
    if processed is None or cached is None or processed + cached == 0:
        return None
    return cached / (processed + cached)
