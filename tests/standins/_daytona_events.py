"""The Daytona API's event stream, for the stand-in: Socket.IO at ``/api/socket.io/`` (python-socketio, the
library the SDK's own client uses), so the SDK waits for a sandbox by its events, as against the real service,
instead of falling back to polling after a 404.

As the service does: the client authenticates with ``auth={"token": <API key>}`` (refused otherwise) and joins
its organisation's room; every sandbox state change is sent there as ``sandbox.state.updated`` with
``{"sandbox": <Sandbox DTO>, "oldState", "newState"}``, and a new sandbox as ``sandbox.created`` with its DTO.
The stand-in's states move with time, so a ticker notices the changes and sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

TICK_SECONDS = 0.02


class EventStream:
    def __init__(self, api_key: str, organization_id: str) -> None:
        self.api_key = api_key
        self.room = f"organization:{organization_id}"
        self.server = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", logger=False)
        self.connections = 0  # clients ever accepted
        self.refused = 0
        self.sent: list[tuple[str, str, str | None]] = []  # (event, sandbox id, new state)
        self._last: dict[str, str] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.server.on("connect", self._connect)

    def attach(self, app: web.Application) -> None:
        self.server.attach(app, socketio_path="/api/socket.io/")

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if token != self.api_key:
            self.refused += 1
            raise socketio.exceptions.ConnectionRefusedError("Unauthorized")
        self.connections += 1
        await self.server.enter_room(sid, self.room)

    def start(self, sandboxes: Callable[[], dict[str, Any]], dto: Callable[[Any], Any]) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick(sandboxes, dto))

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(Exception):
            await self.server.shutdown()

    async def created(self, sandbox: Any) -> None:
        data = json.loads(sandbox.to_json())  # the DTO as JSON (dates as strings)
        self._last[data["id"]] = data.get("state")
        self.sent.append(("sandbox.created", data["id"], data.get("state")))
        await self.server.emit("sandbox.created", data, room=self.room)

    async def state_changed(self, sandbox: Any, old: str | None) -> None:
        data = json.loads(sandbox.to_json())  # the DTO as JSON (dates as strings)
        self._last[data["id"]] = data.get("state")
        self.sent.append(("sandbox.state.updated", data["id"], data.get("state")))
        payload = {"sandbox": data, "oldState": old, "newState": data.get("state")}
        await self.server.emit("sandbox.state.updated", payload, room=self.room)

    async def _tick(self, sandboxes: Callable[[], dict[str, Any]], dto: Callable[[Any], Any]) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for record in list(sandboxes().values()):
                state = record.state.value
                old = self._last.get(record.id)
                if old is not None and old != state:
                    with contextlib.suppress(Exception):
                        await self.state_changed(dto(record), old)
