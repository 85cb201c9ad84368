"""The Daytona provider, on the real `daytona` SDK: a GPU sandbox from the stock SGLang image.

The sandbox is ephemeral with auto-stop off (a busy endpoint must not stop under its users), labelled as ours
so a sandbox is never lost track of, and its server runs as an async session command whose log and exit code
are polled. Every sandbox this module creates is either recorded in the ledger or deleted.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from sandserve.endpoint import PREVIEW_TOKEN_HEADER, SKIP_PREVIEW_WARNING_HEADER
from sandserve.engines.base import Launch
from sandserve.errors import (
    MissingCredentialsError,
    ProviderError,
    QuotaExceededError,
    SandboxCreateTimeoutError,
)
from sandserve.providers.base import Exposure, Provider, SandboxHandle
from sandserve.spec import SANDBOX_PORT, AuthMode, ServeSpec

if TYPE_CHECKING:
    from daytona import Daytona, Sandbox

SESSION = "sandserve-server"
HF_CACHE_PATH = "/root/.cache/huggingface"
LABEL_OWNER = "sandserve"
LABEL_ENDPOINT = "sandserve.endpoint"
LABEL_MODEL = "sandserve.model"
QUOTA_MARKER = "gpu limit exceeded"


class DaytonaProvider(Provider):
    name = "daytona"
    poll_interval = 3.0
    keeps_failed_sandboxes = True

    def __init__(self, client: Daytona | None = None) -> None:
        self._client = client
        self._sandboxes: dict[str, Sandbox] = {}

    @property
    def client(self) -> Daytona:
        if self._client is None:
            self._client = _connect()
        return self._client

    # --- create ---------------------------------------------------------------------------------------

    def preflight(self, spec: ServeSpec) -> None:
        self.client  # noqa: B018 - constructing the client is the credentials check

    def create(self, spec: ServeSpec, endpoint_id: str) -> SandboxHandle:
        from daytona import DaytonaError, DaytonaTimeoutError

        params = self._create_params(spec, endpoint_id)
        try:
            sandbox = self.client.create(params, timeout=spec.create_timeout)
        except DaytonaTimeoutError as exc:
            sandbox_id = getattr(exc, "sandbox_id", None)
            cleaned = bool(sandbox_id) and self._delete_by_id(str(sandbox_id))
            raise SandboxCreateTimeoutError(spec.create_timeout, sandbox_id, cleaned) from exc
        except KeyboardInterrupt:
            self._delete_labelled(endpoint_id)
            raise
        except DaytonaError as exc:
            raise _translate(exc, "create the sandbox") from exc
        self._sandboxes[sandbox.id] = sandbox
        return SandboxHandle(self.name, sandbox.id, {"port": spec.port or SANDBOX_PORT, "session": SESSION})

    def _create_params(self, spec: ServeSpec, endpoint_id: str) -> Any:
        from daytona import CreateSandboxFromImageParams, GpuType, Resources, VolumeMount

        env_vars = {}
        secrets = None
        if spec.hf_token_secret:
            secrets = {"HF_TOKEN": spec.hf_token_secret}
        elif spec.hf_token:
            env_vars["HF_TOKEN"] = spec.hf_token
        volumes = None
        if spec.cache_volume:
            volume = self._volume(spec.cache_volume)
            volumes = [VolumeMount(volume_id=volume.id, mount_path=HF_CACHE_PATH)]
        resources = None
        if spec.gpus:
            resources = Resources(gpu=1, gpu_type=[GpuType(gpu) for gpu in spec.gpus])
        return CreateSandboxFromImageParams(
            image=spec.image,
            resources=resources,
            auto_stop_interval=0,
            ephemeral=True,
            public=spec.auth in (AuthMode.KEY, AuthMode.PUBLIC),
            env_vars=env_vars,
            secrets=secrets,
            volumes=volumes,
            target=spec.target,
            labels={
                LABEL_OWNER: "1",
                LABEL_ENDPOINT: endpoint_id,
                LABEL_MODEL: spec.served_name,
                **spec.labels,
            },
        )

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
            raise _translate(exc, f"get the volume {name!r}") from exc

    # --- the server -----------------------------------------------------------------------------------

    def server_port(self, handle: SandboxHandle) -> int:
        return int(handle.data.get("port", SANDBOX_PORT))

    def start(self, handle: SandboxHandle, launch: Launch) -> None:
        from daytona import DaytonaError, SessionExecuteRequest

        sandbox = self._sandbox(handle)
        try:
            sandbox.process.create_session(SESSION)
            command = sandbox.process.execute_session_command(
                SESSION, SessionExecuteRequest(command=launch.shell_command(), run_async=True)
            )
        except DaytonaError as exc:
            raise _translate(exc, "start the server") from exc
        handle.data["cmd_id"] = command.cmd_id

    def read_log(self, handle: SandboxHandle) -> str:
        from daytona import DaytonaError

        if "cmd_id" not in handle.data:
            return ""
        try:
            logs = self._sandbox(handle).process.get_session_command_logs(SESSION, handle.data["cmd_id"])
        except DaytonaError as exc:
            raise _translate(exc, "read the server log") from exc
        return logs.output or ""

    def exit_code(self, handle: SandboxHandle) -> int | None:
        from daytona import DaytonaError, DaytonaNotFoundError

        if "cmd_id" not in handle.data:
            return None
        try:
            command = self._sandbox(handle).process.get_session_command(SESSION, handle.data["cmd_id"])
        except DaytonaNotFoundError:
            return -1
        except DaytonaError as exc:
            raise _translate(exc, "check the server") from exc
        return command.exit_code

    def expose(self, handle: SandboxHandle, spec: ServeSpec) -> Exposure:
        from daytona import DaytonaError

        sandbox = self._sandbox(handle)
        port = self.server_port(handle)
        skip_warning = {SKIP_PREVIEW_WARNING_HEADER: "true"}
        try:
            if spec.auth is AuthMode.SIGNED:
                signed = sandbox.create_signed_preview_url(port, expires_in_seconds=spec.signed_url_ttl)
                return Exposure(
                    url=signed.url.rstrip("/"),
                    headers=skip_warning,
                    expires_at=time.time() + spec.signed_url_ttl,
                )
            preview = sandbox.get_preview_link(port)
        except DaytonaError as exc:
            raise _translate(exc, "open the preview URL") from exc
        url = preview.url.rstrip("/")
        if spec.auth is AuthMode.TOKEN:
            return Exposure(url=url, headers={PREVIEW_TOKEN_HEADER: preview.token, **skip_warning})
        if spec.auth is AuthMode.KEY:
            return Exposure(url=url, headers=skip_warning, api_key=spec.api_key)
        return Exposure(url=url, headers=skip_warning)

    # --- lifecycle ------------------------------------------------------------------------------------

    def is_running(self, handle: SandboxHandle) -> bool:
        from daytona import DaytonaNotFoundError, SandboxState

        try:
            sandbox = self.client.get(handle.sandbox_id)
        except DaytonaNotFoundError:
            return False
        self._sandboxes[handle.sandbox_id] = sandbox
        if sandbox.state != SandboxState.STARTED:
            return False
        return "cmd_id" not in handle.data or self.exit_code(handle) is None

    def delete(self, handle: SandboxHandle) -> None:
        from daytona import DaytonaError, DaytonaNotFoundError

        if not handle.sandbox_id:
            return
        try:
            self.client.delete(self.client.get(handle.sandbox_id), timeout=120)
        except DaytonaNotFoundError:
            pass
        except DaytonaError as exc:
            raise _translate(exc, f"delete sandbox {handle.sandbox_id}") from exc
        self._sandboxes.pop(handle.sandbox_id, None)

    def _sandbox(self, handle: SandboxHandle) -> Sandbox:
        sandbox = self._sandboxes.get(handle.sandbox_id)
        if sandbox is None:
            sandbox = self._sandboxes[handle.sandbox_id] = self.client.get(handle.sandbox_id)
        return sandbox

    def _delete_by_id(self, sandbox_id: str) -> bool:
        with contextlib.suppress(Exception):
            self.delete(SandboxHandle(self.name, sandbox_id))
            return True
        return False

    def _delete_labelled(self, endpoint_id: str) -> None:
        """Delete whatever a create interrupted half-way left behind: it carries our endpoint label."""
        from daytona import ListSandboxesQuery

        with contextlib.suppress(Exception):
            for sandbox in self.client.list(ListSandboxesQuery(labels={LABEL_ENDPOINT: endpoint_id})):
                self._delete_by_id(sandbox.id)


def _connect() -> Daytona:
    """A client configured the SDK's way: DAYTONA_API_KEY / DAYTONA_API_URL / DAYTONA_TARGET, or .env."""
    from daytona import Daytona, DaytonaConfig, DaytonaError

    try:
        return Daytona(DaytonaConfig())
    except DaytonaError as exc:
        raise MissingCredentialsError(
            "A Daytona API key",
            hint="Set DAYTONA_API_KEY (in the environment or in .env), or serve locally with --provider local.",
        ) from exc


def _translate(exc: Exception, doing: str) -> ProviderError:
    from daytona import DaytonaAuthenticationError

    message = str(exc)
    if QUOTA_MARKER in message.lower():
        return QuotaExceededError(message.strip())
    if isinstance(exc, DaytonaAuthenticationError):
        return ProviderError(
            f"Daytona refused the API key while trying to {doing}.",
            hint="Check DAYTONA_API_KEY (the Daytona dashboard issues keys) and DAYTONA_API_URL.",
        )
    return ProviderError(
        f"Daytona could not {doing}: {message}",
        hint="Run again; if it persists, check the Daytona dashboard for the sandbox's state.",
    )
