"""The Daytona provider, on the real `daytona` SDK: a GPU sandbox from the stock SGLang image.

The sandbox is ephemeral (the service demands it of GPU sandboxes), bounded in time by the service itself
(``ttl_minutes``; auto-stop only when asked: a busy endpoint must not stop under its users), labelled as ours
so a sandbox is never lost track of, and its server runs as an async session command whose log and exit code
are polled. sandserve's own probes carry the header that keeps them from counting as activity. Every sandbox
this module creates is either recorded in the ledger or deleted.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sandserve import config
from sandserve.endpoint import Endpoint
from sandserve.engines.base import Launch
from sandserve.errors import (
    ConfigError,
    ProviderError,
    SandboxCreateTimeoutError,
)
from sandserve.providers.base import TOOLS_IN_A_DAYTONA_SANDBOX, Exposure, Provider
from sandserve.providers.colocated import ColocatedJob, ColocatedOutcome, InsideAccess, OnOutput
from sandserve.providers.daytona_errors import connect, translate
from sandserve.providers.daytona_headers import (
    PREVIEW_TOKEN_HEADER,
    SKIP_ACTIVITY_HEADER,
    SKIP_PREVIEW_WARNING_HEADER,
)
from sandserve.providers.handles import DaytonaHandle
from sandserve.providers.warmboot import CaptureOutcome, SnapshotInfo, WarmBootPlan
from sandserve.spec import (
    DEFAULT_GPU_TTL_MINUTES,
    SANDBOX_PORT,
    AuthMode,
    ProviderSettings,
    Resources,
    ServeSpec,
)

if TYPE_CHECKING:
    from daytona import Daytona, Sandbox

    from sandserve.engines.base import Engine

SESSION = "sandserve-server"
HF_CACHE_PATH = "/root/.cache/huggingface"
LABEL_OWNER = "sandserve"
LABEL_ENDPOINT = "sandserve.endpoint"
LABEL_MODEL = "sandserve.model"
#: Hosts of Daytona's preview proxy (private and signed preview URLs).
PREVIEW_HOST_SUFFIXES = (".proxy.daytona.works", ".proxy.daytona.work", ".daytona.app")


class DaytonaProvider(Provider[DaytonaHandle]):
    name = "daytona"
    handle_type = DaytonaHandle
    tool_sandbox_kind = TOOLS_IN_A_DAYTONA_SANDBOX
    token_header = PREVIEW_TOKEN_HEADER
    # The warning page is skipped by every request (it is in the endpoint's own headers).
    probe_headers = {SKIP_ACTIVITY_HEADER: "true"}
    poll_interval = 3.0
    keeps_failed_sandboxes = True
    keeps_snapshots = True

    def __init__(self, client: Daytona | None = None) -> None:
        self._client = client
        self._watch_client: Daytona | None = None
        self._sandboxes: dict[str, Sandbox] = {}

    @property
    def client(self) -> Daytona:
        if self._client is None:
            self._client = connect()
        return self._client

    # --- create ---------------------------------------------------------------------------------------

    @classmethod
    def recognises(cls, url: str, header_names: frozenset[str]) -> bool:
        # A preview token, or a preview URL of Daytona's proxy (signed ones carry no token).
        host = (urlsplit(url).hostname or "").lower()
        return PREVIEW_TOKEN_HEADER.lower() in header_names or host.endswith(PREVIEW_HOST_SUFFIXES)

    @classmethod
    def check_engine(cls, engine: type[Engine], model: str) -> None:
        # The sandbox starts from the stock SGLang image, with nothing of this machine's in it.
        if not engine.runs_in_sandbox_image:
            raise ConfigError(
                f"{model!r} is served with {engine.label}, which runs on this machine only: a Daytona "
                "sandbox starts from the stock SGLang image, which has neither this machine's "
                f"{engine.label} build nor its model files.",
                hint="Serve it here with --provider local, or on Daytona serve an SGLang model: a preset "
                "(`sandserve presets` lists them, e.g. 'gpt-oss-20b') or a Hugging Face id (org/name).",
            )

    def settle(self, settings: ProviderSettings, resources: Resources) -> ProviderSettings:
        # DAYTONA_TARGET as the SDK reads it; a GPU sandbox gets a time limit unless one was given.
        ttl = settings.ttl_minutes
        return replace(
            settings,
            target=settings.target or config.daytona_target().value,
            ttl_minutes=(DEFAULT_GPU_TTL_MINUTES if resources.uses_gpu else 0) if ttl is None else ttl,
        )

    def plan(self, spec: ServeSpec, head: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        from sandserve.providers.daytona_plan import sandbox_plan

        return sandbox_plan(spec, head, server)

    def gpu_capacity(self, spec: ServeSpec) -> tuple[dict[str, int] | None, str]:
        from sandserve.providers.daytona_capacity import free_gpus

        if not config.daytona_key().is_set:
            return None, "no DAYTONA_API_KEY"
        return free_gpus(self.client, spot=spec.resources.spot)

    def preflight(self, spec: ServeSpec) -> list[str] | None:
        from sandserve.providers.daytona_params import gpu_types

        gpu_types(spec.resources.gpu_types)
        self.client  # noqa: B018 - constructing the client is the credentials check
        if spec.uses_gpu and spec.engine == "sglang":
            from sandserve.providers.hfcheck import check_model_repo, looks_like_repo_id

            if looks_like_repo_id(spec.model):
                if spec.provider_settings.hf_token_secret:
                    return _check_with_a_secret(spec)
                warning = check_model_repo(spec.model, spec.hf_token)
                return [warning] if warning else None
        return None

    def create(self, spec: ServeSpec, endpoint_id: str, *, snapshot: str | None = None) -> DaytonaHandle:
        from daytona import DaytonaError, DaytonaTimeoutError

        params = self._create_params(spec, endpoint_id, snapshot)
        try:
            sandbox = self.client.create(params, timeout=spec.provider_settings.create_timeout)
        except DaytonaTimeoutError as exc:
            sandbox_id = getattr(exc, "sandbox_id", None)
            cleaned = bool(sandbox_id) and self._delete_by_id(str(sandbox_id))
            raise SandboxCreateTimeoutError(
                spec.provider_settings.create_timeout, sandbox_id, cleaned
            ) from exc
        except KeyboardInterrupt:
            self._delete_labelled(endpoint_id)
            raise
        except DaytonaError as exc:
            raise translate(exc, "create the sandbox", spec) from exc
        self._sandboxes[sandbox.id] = sandbox
        gpu_type = getattr(sandbox.gpu_type, "value", sandbox.gpu_type)
        return DaytonaHandle(
            self.name,
            sandbox.id,
            port=spec.port or SANDBOX_PORT,
            session=SESSION,
            snapshot=snapshot,
            gpu_type=str(gpu_type) if gpu_type else None,
        )

    def _create_params(self, spec: ServeSpec, endpoint_id: str, snapshot: str | None) -> Any:
        from sandserve.providers.daytona_params import create_params

        volume = spec.provider_settings.cache_volume
        volume_id = self._volume(volume).id if volume else None
        labels = {LABEL_OWNER: "1", LABEL_ENDPOINT: endpoint_id, LABEL_MODEL: spec.served_name}
        return create_params(
            spec, labels=labels, cache_volume_id=volume_id, cache_path=HF_CACHE_PATH, snapshot=snapshot
        )

    # --- warm boots: golden snapshots (providers/daytona_snapshots.py) ---------------------------------

    def warm_boot_plan(self, spec: ServeSpec, *, activate: bool = True) -> WarmBootPlan | None:
        from daytona import DaytonaError

        from sandserve.providers import daytona_snapshots

        if not spec.uses_gpu or not spec.provider_settings.warm_boot:
            return None
        try:
            return daytona_snapshots.plan(self.client, spec, activate=activate)
        except DaytonaError as exc:
            return WarmBootPlan(None, reasons=(f"Daytona could not be asked for snapshots ({exc})",))

    def create_warm(self, spec: ServeSpec, endpoint_id: str, plan: WarmBootPlan) -> DaytonaHandle:
        from sandserve.providers.daytona_snapshots import is_snapshot_refusal

        assert plan.snapshot is not None
        try:
            return self.create(spec, endpoint_id, snapshot=plan.snapshot)
        except ProviderError as exc:
            if not is_snapshot_refusal(exc, plan.snapshot):
                raise
            handle = self.create(spec, endpoint_id)
            handle.extra["warm_boot_fallback"] = f"Daytona refused snapshot {plan.snapshot}: {exc.message}"
            return handle

    def warm_boot(self, handle: DaytonaHandle) -> tuple[str | None, str | None]:
        return handle.snapshot, handle.gpu_type

    def cache_root(self, handle: DaytonaHandle) -> str | None:
        from daytona import DaytonaError

        from sandserve.providers.daytona_snapshots import CACHE_DIR, sandbox_home

        try:
            return f"{sandbox_home(self._sandbox(handle))}/{CACHE_DIR}"
        except DaytonaError as exc:
            raise translate(exc, "find the sandbox's home directory") from exc

    def restored_steps(self, handle: DaytonaHandle, spec: ServeSpec) -> frozenset[str]:
        from sandserve.providers.daytona_snapshots import restored

        return restored(self._sandbox(handle), spec)

    def capture_snapshot(self, handle: DaytonaHandle, spec: ServeSpec) -> CaptureOutcome:
        from daytona import DaytonaError

        from sandserve.providers.daytona_snapshots import capture

        try:
            return capture(self.client, self._sandbox(handle), spec)
        except DaytonaError as exc:
            return CaptureOutcome(f"no snapshot: {exc}")

    def snapshots(self) -> list[SnapshotInfo]:
        from daytona import DaytonaError

        from sandserve.providers.daytona_snapshots import listing

        try:
            return listing(self.client)
        except DaytonaError as exc:
            raise translate(exc, "list the snapshots") from exc

    def delete_snapshot(self, name: str) -> None:
        from daytona import DaytonaError, DaytonaNotFoundError

        from sandserve.errors import SnapshotNotFoundError

        try:
            self.client.snapshot.delete(name)
        except DaytonaNotFoundError as exc:
            raise SnapshotNotFoundError(name) from exc
        except DaytonaError as exc:
            raise translate(exc, f"delete snapshot {name}") from exc

    def _volume(self, name: str) -> Any:
        from daytona import DaytonaError

        try:
            volume = self.client.volume.get(name, create=True)
            deadline = time.monotonic() + 60
            while str(getattr(volume, "state", "ready")).lower().endswith("pending_create") and (
                time.monotonic() < deadline
            ):
                time.sleep(1)
                volume = self.client.volume.get(name)
            return volume
        except DaytonaError as exc:
            raise translate(exc, f"get the volume {name!r}") from exc

    # --- the server -----------------------------------------------------------------------------------

    def server_port(self, handle: DaytonaHandle) -> int:
        return handle.port if handle.port is not None else SANDBOX_PORT

    def start(self, handle: DaytonaHandle, launch: Launch) -> None:
        from daytona import DaytonaError, SessionExecuteRequest

        sandbox = self._sandbox(handle)
        try:
            sandbox.process.create_session(SESSION)
            command = sandbox.process.execute_session_command(
                SESSION, SessionExecuteRequest(command=launch.shell_command(), run_async=True)
            )
        except DaytonaError as exc:
            raise translate(exc, "start the server") from exc
        handle.cmd_id = command.cmd_id

    def read_log(self, handle: DaytonaHandle) -> str:
        from daytona import DaytonaError

        if handle.cmd_id is None:
            return ""
        try:
            logs = self._sandbox(handle).process.get_session_command_logs(SESSION, handle.cmd_id)
        except DaytonaError as exc:
            raise translate(exc, "read the server log") from exc
        return logs.output or ""

    def exit_code(self, handle: DaytonaHandle) -> int | None:
        from daytona import DaytonaError, DaytonaNotFoundError

        if handle.cmd_id is None:
            return None
        try:
            command = self._sandbox(handle).process.get_session_command(SESSION, handle.cmd_id)
        except DaytonaNotFoundError:
            return -1
        except DaytonaError as exc:
            raise translate(exc, "check the server") from exc
        return command.exit_code

    def expose(self, handle: DaytonaHandle, spec: ServeSpec) -> Exposure:
        from daytona import DaytonaError

        sandbox = self._sandbox(handle)
        port = self.server_port(handle)
        skip_warning = {SKIP_PREVIEW_WARNING_HEADER: "true"}
        probe = dict(self.probe_headers)
        try:
            if spec.auth is AuthMode.SIGNED:
                signed = sandbox.create_signed_preview_url(
                    port, expires_in_seconds=spec.provider_settings.signed_url_ttl
                )
                return Exposure(
                    url=signed.url.rstrip("/"),
                    headers=skip_warning,
                    expires_at=time.time() + spec.provider_settings.signed_url_ttl,
                    probe_headers=probe,
                )
            preview = sandbox.get_preview_link(port)
        except DaytonaError as exc:
            raise translate(exc, "open the preview URL") from exc
        url = preview.url.rstrip("/")
        if spec.auth is AuthMode.TOKEN:
            headers = {PREVIEW_TOKEN_HEADER: preview.token, **skip_warning}
            return Exposure(url=url, headers=headers, probe_headers=probe, token_header=PREVIEW_TOKEN_HEADER)
        if spec.auth is AuthMode.KEY:
            return Exposure(url=url, headers=skip_warning, api_key=spec.api_key, probe_headers=probe)
        return Exposure(url=url, headers=skip_warning, probe_headers=probe)

    # --- colocated work -------------------------------------------------------------------------------

    def inside_access(self, handle: DaytonaHandle, served: Endpoint) -> InsideAccess:
        # Inside the sandbox the server is on localhost: no preview proxy, so no token to send.
        return InsideAccess(f"http://localhost:{self.server_port(handle)}", served.api_key)

    def run_colocated(
        self, handle: DaytonaHandle, job: ColocatedJob, on_output: OnOutput
    ) -> ColocatedOutcome:
        from daytona import DaytonaError

        from sandserve.providers.daytona_colocated import run_in_sandbox

        try:
            return run_in_sandbox(self._sandbox(handle), job, on_output)
        except DaytonaError as exc:
            raise translate(exc, "run the job in the sandbox") from exc

    # --- lifecycle ------------------------------------------------------------------------------------

    def is_running(self, handle: DaytonaHandle) -> bool:
        """Whether the server still runs, asked without counting as activity: `ls` and `status` must not keep
        an idle sandbox from its auto-stop."""
        from daytona import DaytonaError, DaytonaNotFoundError, SandboxState

        try:
            sandbox = self.watch_client.get(handle.sandbox_id)
        except DaytonaNotFoundError:
            return False
        if sandbox.state != SandboxState.STARTED:
            return False
        if handle.cmd_id is None:
            return True
        try:
            command = sandbox.process.get_session_command(SESSION, handle.cmd_id)
        except DaytonaNotFoundError:
            return False
        except DaytonaError as exc:
            raise translate(exc, "check the server") from exc
        return command.exit_code is None

    @property
    def watch_client(self) -> Daytona:
        """A second client whose toolbox requests carry the skip-activity header. Daytona's proxy counts every
        toolbox request as activity otherwise (daytonaio/daytona apps/proxy: GetProxyTarget)."""
        if self._watch_client is None:
            client = connect()
            # The SDK has no public setting for its toolbox client's headers; its generated client takes
            # default headers, and every toolbox call of this client goes through it.
            client._toolbox_api_client.default_headers[SKIP_ACTIVITY_HEADER] = "true"
            self._watch_client = client
        return self._watch_client

    def delete(self, handle: DaytonaHandle) -> None:
        from daytona import DaytonaError, DaytonaNotFoundError

        if not handle.sandbox_id:
            return
        try:
            self.client.delete(self.client.get(handle.sandbox_id), timeout=120)
        except DaytonaNotFoundError:
            pass
        except DaytonaError as exc:
            raise translate(exc, f"delete sandbox {handle.sandbox_id}") from exc
        self._sandboxes.pop(handle.sandbox_id, None)

    def _sandbox(self, handle: DaytonaHandle) -> Sandbox:
        sandbox = self._sandboxes.get(handle.sandbox_id)
        if sandbox is None:
            sandbox = self._sandboxes[handle.sandbox_id] = self.client.get(handle.sandbox_id)
        return sandbox

    def _delete_by_id(self, sandbox_id: str) -> bool:
        with contextlib.suppress(Exception):
            self.delete(DaytonaHandle(self.name, sandbox_id))
            return True
        return False

    def _delete_labelled(self, endpoint_id: str) -> None:
        """Delete whatever a create interrupted half-way left behind: it carries our endpoint label."""
        from daytona import ListSandboxesQuery

        with contextlib.suppress(Exception):
            for sandbox in self.client.list(ListSandboxesQuery(labels={LABEL_ENDPOINT: endpoint_id})):
                self._delete_by_id(sandbox.id)


def _check_with_a_secret(spec: ServeSpec) -> list[str] | None:
    """The server's token is in a Daytona secret this machine cannot read: check with the local one, if any,
    and only warn, since the secret's account may well have the access this one lacks."""
    from sandserve.config import hf_token
    from sandserve.errors import ModelRepoError
    from sandserve.providers.hfcheck import check_model_repo

    try:
        warning = check_model_repo(spec.model, hf_token().value)
    except ModelRepoError as exc:
        return [
            f"{exc.message} (checked with this machine's token; the server gets the secret "
            f"{spec.provider_settings.hf_token_secret!r}, which may have access)"
        ]
    return [warning] if warning else None
