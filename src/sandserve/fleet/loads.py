"""How busy a fleet's workers are, from their engines' own load endpoints (``observe.loads``): what the
autoscaler decides on and ``fleet status`` shows. Every probe carries the worker's probe headers (Daytona's
skip-activity header), so watching a worker never keeps an idle sandbox alive: idling workers down is the
autoscaler's decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sandserve.endpoint import Endpoint
from sandserve.observe.loads import EndpointLoad, LoadProbe, read_loads

LOAD_TIMEOUT = 5.0


@dataclass(frozen=True)
class WorkerLoad:
    """One worker's load at one moment, as its engine reports it."""

    running: int
    queued: int
    cache_hit_rate: float | None = None

    @property
    def busy(self) -> bool:
        return self.running + self.queued > 0


def worker_load(reading: EndpointLoad) -> WorkerLoad | None:
    """None when the engine did not answer or does not say how many requests it runs."""
    if not reading.ok or reading.running is None:
        return None
    return WorkerLoad(
        running=reading.running, queued=reading.queued or 0, cache_hit_rate=reading.cache_hit_rate
    )


def read_load(endpoint: Endpoint) -> WorkerLoad | None:
    """One reading of one worker (a blocking call)."""
    return worker_load(read_loads([endpoint], timeout=LOAD_TIMEOUT)[0])


class LoadReader:
    """Readings of many workers, again and again, over one session (the routes a worker lacks are asked
    once)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._probe = LoadProbe(timeout=LOAD_TIMEOUT)

    def read(self, endpoints: Sequence[Endpoint]) -> dict[str, WorkerLoad | None]:
        readings = self._loop.run_until_complete(self._probe.read_many(endpoints))
        return {
            endpoint.id: worker_load(reading) for endpoint, reading in zip(endpoints, readings, strict=True)
        }

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._probe.close())
        except RuntimeError:  # interrupted inside a reading: the loop is still running it
            pass
        finally:
            if not self._loop.is_running():
                self._loop.close()


__all__ = ["LoadReader", "WorkerLoad", "read_load", "worker_load"]
