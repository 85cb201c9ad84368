"""What outlives a sandbox in the Daytona stand-in: volumes and snapshots.

Snapshots follow the service (SDK 0.226.1 and the API of the open-source release, facts/daytona.md):
- `POST /sandbox/{id}/snapshot` (`CreateSandboxSnapshot`): the sandbox must be started or stopped and not
  in a state change; the organisation's snapshot count quota is checked first ("Snapshot quota exceeded.
  Maximum allowed: N", as users have reported it); the sandbox goes to `snapshotting` and back to its
  previous state; the runner's commit + push happens in the background (`capture_seconds` here).
- A capture larger than the organisation's maximum snapshot size (`max_snapshot_size_gb`, 20 GB in the
  open-source configuration) ends with the snapshot in `error` and a reason. Its size is the sandbox's
  files plus the image's layers (`image_size_gb`: the SGLang CUDA image is about 11 GB compressed).
- A snapshot records the GPU count and type of the sandbox it was taken from. A create naming a snapshot
  gets that GPU (the API takes the snapshot's resources and schedules on a runner of its GPU type), and the
  new sandbox starts with the snapshot's files (here: its HOME, copied).
- An unused snapshot goes `inactive` (`deactivate`, the two weeks of the service); `activate` makes it
  pending, then active again. A create from a snapshot that is not active is refused ("Snapshot X is
  inactive").
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from daytona_api_client import (
    CreateSandboxSnapshot,
    CreateVolume,
    GpuType,
    PaginatedSnapshots,
    SandboxState,
    SandboxVolume,
    SnapshotDto,
    SnapshotState,
    VolumeDto,
    VolumeState,
)

from . import _daytona_rules
from ._daytona_http import ORGANIZATION_ID, StandinError, _json, _json_body, _now

if TYPE_CHECKING:
    from ._daytona_events import EventStream
    from .daytona_api import SandboxRecord

#: The open-source API's default maximum snapshot size (GB); the hosted service's is not published.
DEFAULT_MAX_SNAPSHOT_SIZE_GB = 20.0
#: The compressed size of the stock SGLang CUDA image, which a container commit carries.
SGLANG_IMAGE_SIZE_GB = 11.0


@dataclass
class SnapshotRecord:
    """One snapshot: what the API reports of it, and the files a sandbox created from it starts with."""

    dto: SnapshotDto
    files: Path | None


class StorageRoutes:
    """Volume and snapshot routes of the control plane (a mixin of `DaytonaStandin`)."""

    sandboxes: dict[str, SandboxRecord]
    volumes: dict[str, VolumeDto]
    snapshots: dict[str, SnapshotRecord]
    events: EventStream
    state_step_seconds: float
    capture_seconds: float
    max_snapshots: int | None
    max_snapshot_size_gb: float
    image_size_gb: float
    _root: Path | None

    def _sandbox(self, request: web.Request) -> SandboxRecord:
        raise NotImplementedError

    def _dto(self, record: SandboxRecord) -> Any:
        raise NotImplementedError

    # ----- control plane: volumes -----

    async def _list_volumes(self, request: web.Request) -> web.Response:
        return _json(list(self.volumes.values()))

    async def _create_volume(self, request: web.Request) -> web.Response:
        body = _daytona_rules.parse(CreateVolume, await _json_body(request))
        assert body is not None
        if any(v.name == body.name for v in self.volumes.values()):
            raise StandinError(409, f"Volume with name {body.name} already exists")
        now = _now()
        volume = VolumeDto(
            id=str(uuid.uuid4()),
            name=body.name,
            organization_id=ORGANIZATION_ID,
            state=VolumeState.READY,
            created_at=now,
            updated_at=now,
            error_reason=None,
        )
        self.volumes[volume.id] = volume
        return _json(volume)

    async def _get_volume_by_name(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        volume = next((v for v in self.volumes.values() if v.name == name), None)
        if volume is None:
            raise StandinError(404, f"Volume with name {name} not found")
        return _json(volume)

    async def _get_volume(self, request: web.Request) -> web.Response:
        return _json(self._volume(request.match_info["vid"]))

    async def _delete_volume(self, request: web.Request) -> web.Response:
        del self.volumes[self._volume(request.match_info["vid"]).id]
        return web.Response(status=200)

    def _volume(self, volume_id: str) -> VolumeDto:
        if volume_id not in self.volumes:
            raise StandinError(404, f"Volume {volume_id} not found")
        return self.volumes[volume_id]

    def _resolve_volume_mount(self, mount: SandboxVolume) -> SandboxVolume:
        volume = self.volumes.get(mount.volume_id) or next(
            (v for v in self.volumes.values() if v.name == mount.volume_id), None
        )
        if volume is None:
            raise StandinError(404, f"Volume {mount.volume_id} not found")
        return SandboxVolume(volume_id=volume.id, mount_path=mount.mount_path, subpath=mount.subpath)

    # ----- control plane: snapshots -----

    def deactivate_snapshot(self, name: str) -> None:
        """What two weeks without use do: the snapshot goes inactive."""
        self.snapshot_named(name).dto.state = SnapshotState.INACTIVE

    def fail_snapshot(self, name: str, reason: str) -> None:
        """Put a snapshot in the error state, with the service's reason."""
        dto = self.snapshot_named(name).dto
        dto.state = SnapshotState.ERROR
        dto.error_reason = reason

    def snapshot_named(self, key: str) -> SnapshotRecord:
        found = self.snapshots.get(key) or next(
            (s for s in self.snapshots.values() if s.dto.name == key), None
        )
        if found is None:
            raise StandinError(404, f"Snapshot {key} not found")
        return found

    async def _create_sandbox_snapshot(self, request: web.Request) -> web.Response:
        record = self._sandbox(request)
        body = _daytona_rules.parse(CreateSandboxSnapshot, await _json_body(request))
        assert body is not None
        if record.state == SandboxState.SNAPSHOTTING:
            raise StandinError(409, "Sandbox state change in progress")
        if record.state not in (SandboxState.STARTED, SandboxState.STOPPED):
            raise StandinError(400, "Sandbox must be in started or stopped state to create a snapshot")
        if any(s.dto.name == body.name for s in self.snapshots.values()):
            raise StandinError(409, f"Snapshot with name {body.name} already exists")
        if self.max_snapshots is not None and len(self.snapshots) >= self.max_snapshots:
            raise StandinError(400, f"Snapshot quota exceeded. Maximum allowed: {self.max_snapshots}")
        previous = record.stored_state
        record.stored_state = SandboxState.SNAPSHOTTING
        await self.events.state_changed(self._dto(record), previous.value)
        asyncio.get_running_loop().create_task(self._capture(record, body.name, previous))
        return _json(self._dto(record))

    async def _capture(self, record: SandboxRecord, name: str, previous: SandboxState) -> None:
        """The runner's commit and push, then the sandbox back in its previous state."""
        await asyncio.sleep(self.capture_seconds)
        size_gb = round(_tree_bytes(record.home) / 1e9 + self.image_size_gb, 3)
        now = datetime.fromisoformat(_now())
        dto = SnapshotDto(
            id=str(uuid.uuid4()),
            organization_id=ORGANIZATION_ID,
            general=False,
            name=name,
            image_name=None,
            state=SnapshotState.ACTIVE,
            size=size_gb,
            entrypoint=None,
            cpu=record.cpu,
            gpu=record.gpu,
            gpu_type=GpuType(record.gpu_type) if record.gpu_type else None,
            mem=record.memory,
            disk=record.disk,
            error_reason=None,
            created_at=now,
            updated_at=now,
            last_used_at=None,
            ref=f"standin/snapshot-{uuid.uuid4().hex[:12]}",
            source_sandbox_id=record.id,
        )
        files: Path | None = None
        if size_gb > self.max_snapshot_size_gb:
            dto.state = SnapshotState.ERROR
            dto.error_reason = (
                f"Snapshot size ({size_gb:.1f} GB) exceeds the maximum allowed size "
                f"({self.max_snapshot_size_gb:g} GB)"
            )
        else:
            assert self._root is not None
            files = self._root / f"snapshot-{dto.id}"
            await asyncio.to_thread(copy_tree, record.home, files)
        self.snapshots[dto.id] = SnapshotRecord(dto, files)
        if record.id in self.sandboxes and record.stored_state == SandboxState.SNAPSHOTTING:
            record.stored_state = previous
            await self.events.state_changed(self._dto(record), SandboxState.SNAPSHOTTING.value)

    def snapshot_for_create(self, name: str) -> SnapshotRecord:
        """The snapshot a create names, refused as the API refuses it (400: missing, or not active)."""
        found = next((s for s in self.snapshots.values() if name in (s.dto.name, s.dto.id)), None)
        if found is None:
            raise StandinError(
                400, f"Snapshot {name} not found. Did you add it through the Daytona Dashboard?"
            )
        if found.dto.state != SnapshotState.ACTIVE:
            raise StandinError(400, f"Snapshot {name} is {found.dto.state.value}")
        found.dto.last_used_at = datetime.fromisoformat(_now())
        return found

    async def _list_snapshots(self, request: web.Request) -> web.Response:
        source = request.query.get("sourceSandboxId")
        items = [s.dto for s in self.snapshots.values() if source in (None, s.dto.source_sandbox_id)]
        page = int(request.query.get("page") or 1)
        limit = int(request.query.get("limit") or 100)
        shown = items[(page - 1) * limit : page * limit]
        pages = max(1, -(-len(items) // limit))
        return _json(PaginatedSnapshots(items=shown, total=len(items), page=page, total_pages=pages))

    async def _get_snapshot(self, request: web.Request) -> web.Response:
        return _json(self.snapshot_named(request.match_info["sid"]).dto)

    async def _delete_snapshot(self, request: web.Request) -> web.Response:
        found = self.snapshot_named(request.match_info["sid"])
        del self.snapshots[found.dto.id]
        if found.files is not None:
            shutil.rmtree(found.files, ignore_errors=True)
        return web.Response(status=200)

    async def _activate_snapshot(self, request: web.Request) -> web.Response:
        found = self.snapshot_named(request.match_info["sid"])
        if found.dto.state != SnapshotState.INACTIVE:
            raise StandinError(400, f"Snapshot {found.dto.name} is not inactive")
        found.dto.state = SnapshotState.PENDING

        async def settle() -> None:
            await asyncio.sleep(self.state_step_seconds)
            if found.dto.state == SnapshotState.PENDING:
                found.dto.state = SnapshotState.ACTIVE

        asyncio.get_running_loop().create_task(settle())
        return _json(found.dto)


def copy_tree(source: Path, target: Path) -> None:
    """A sandbox's files, sparse files kept sparse (the SGLang stand-in's weights are: 13 GB of holes)."""
    shutil.copytree(source, target, symlinks=True, copy_function=_sparse_copy, dirs_exist_ok=True)


def _sparse_copy(source: str, target: str) -> None:
    import os

    with open(source, "rb") as reader, open(target, "wb") as writer:
        size = os.fstat(reader.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                offset = os.lseek(reader.fileno(), offset, os.SEEK_DATA)
            except OSError:  # only a hole is left
                break
            end = os.lseek(reader.fileno(), offset, os.SEEK_HOLE)
            reader.seek(offset)
            writer.seek(offset)
            writer.write(reader.read(end - offset))
            offset = end
        writer.truncate(size)
    shutil.copystat(source, target)


def _tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())
