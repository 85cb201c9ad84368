"""What a sandbox provider is to the pipeline: somewhere to run a server command and reach its port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sandserve.engines.base import Launch
    from sandserve.providers.colocated import ColocatedJob, ColocatedOutcome, OnOutput
    from sandserve.spec import ServeSpec


@dataclass
class SandboxHandle:
    """A provider's own record of one sandbox; ``data`` is JSON-serialisable and lives in the ledger."""

    provider: str
    sandbox_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exposure:
    """How a client reaches the server: base URL and the credentials to send."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    expires_at: float | None = None
    probe_headers: dict[str, str] = field(default_factory=dict)
    """Added to sandserve's own health and readiness probes only (Daytona: they must not count as activity)."""

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def probe_request_headers(self) -> dict[str, str]:
        return {**self.request_headers(), **self.probe_headers}


class Provider:
    """Where a server runs and how clients reach it. Subclasses register themselves by ``name``
    (``get_provider`` looks them up), so nothing outside ``providers/`` branches on a provider's name."""

    registered: ClassVar[dict[str, type[Provider]]] = {}
    name: ClassVar[str]
    #: Seconds between polls of the log / exit code / readiness while booting.
    poll_interval: float
    #: Whether a failed boot keeps its sandbox by default (Daytona: the weights already downloaded).
    keeps_failed_sandboxes: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Provider.registered[cls.name] = cls

    def preflight(self, spec: ServeSpec) -> list[str] | None:
        """Refuse a spec that cannot work (port taken, no credentials) before anything is created; return
        warnings worth showing (a check that could not be made, say)."""
        raise NotImplementedError

    def create(self, spec: ServeSpec, endpoint_id: str) -> SandboxHandle:
        raise NotImplementedError

    def server_port(self, handle: SandboxHandle) -> int:
        raise NotImplementedError

    def start(self, handle: SandboxHandle, launch: Launch) -> None:
        raise NotImplementedError

    def read_log(self, handle: SandboxHandle) -> str:
        """The whole log so far (cumulative)."""
        raise NotImplementedError

    def exit_code(self, handle: SandboxHandle) -> int | None:
        """None while the server runs."""
        raise NotImplementedError

    def expose(self, handle: SandboxHandle, spec: ServeSpec) -> Exposure:
        raise NotImplementedError

    def is_running(self, handle: SandboxHandle) -> bool:
        raise NotImplementedError

    def delete(self, handle: SandboxHandle) -> None:
        """Stop and remove the sandbox; succeeds if it is already gone."""
        raise NotImplementedError

    # --- colocated work: code run beside the server ---

    #: How a job calls Python where it runs.
    python_command: ClassVar[str] = "python3"

    def inside_url(self, handle: SandboxHandle, url: str) -> str:
        """The server's URL as seen by code running beside it."""
        return url

    def run_colocated(
        self, handle: SandboxHandle, job: ColocatedJob, on_output: OnOutput
    ) -> ColocatedOutcome:
        raise NotImplementedError
