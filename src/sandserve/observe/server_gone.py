"""A benchmark's server that went away: the check made after a request failed on its connection, and what the
report says of it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import aiohttp

from sandserve.endpoint import Endpoint


@dataclass(frozen=True)
class ServerGone:
    """The server went away during a level: a request failed on its connection and the server no longer
    answered a plain request either."""

    at: float
    """Unix time it was found gone."""
    level: str
    after_s: float
    """Seconds into that level."""
    reason: str
    """What the check got instead of an answer."""

    def describe(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.at))
        return f"the server went away at {when}, {self.after_s:.1f} s into {self.level} ({self.reason})"


async def server_absence(session: aiohttp.ClientSession, endpoint: Endpoint) -> str | None:
    """None when the server answers ``GET /v1/models`` (any answer from the server itself counts); else what
    came instead: a refused or dropped connection, a timeout, or a proxy's 502/504 (nothing behind it)."""
    try:
        timeout = aiohttp.ClientTimeout(total=15)
        async with session.get(endpoint.base_url + "/models", timeout=timeout) as response:
            if response.status in (502, 504):
                return f"its proxy answers {response.status}: nothing behind it"
            return None
    except aiohttp.ClientConnectorError as exc:
        why = os.strerror(exc.os_error.errno) if exc.os_error.errno else str(exc.os_error)
        return f"{why} at {exc.host}:{exc.port}"
    except aiohttp.ServerDisconnectedError:
        return "it closed the connection without answering"
    except TimeoutError:
        return "no answer within 15 s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
