"""What a sandbox provider is to the pipeline: somewhere to run a server command and reach its port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from sandserve.defaults import DEFAULT_DAYTONA_PRESET
from sandserve.providers.handles import SandboxHandle

if TYPE_CHECKING:
    from sandserve.endpoint import Endpoint
    from sandserve.engines.base import Engine, Launch
    from sandserve.providers.colocated import ColocatedJob, ColocatedOutcome, InsideAccess, OnOutput
    from sandserve.providers.warmboot import CaptureOutcome, SnapshotInfo, WarmBootPlan
    from sandserve.spec import ProviderSettings, Resources, ServeSpec

HandleT = TypeVar("HandleT", bound=SandboxHandle)

#: A server in a remote sandbox is reached through the provider's proxy, from outside its loopback.
ALL_INTERFACES = "0.0.0.0"

#: Kinds of tool sandbox a provider names (``Provider.tool_sandbox_kind``): a sandboxed subprocess on this
#: machine, or a Daytona CPU sandbox of the endpoint's own.
TOOLS_ON_THIS_MACHINE = "this-machine"
TOOLS_IN_A_DAYTONA_SANDBOX = "daytona-cpu"


@dataclass(frozen=True)
class Exposure:
    """How a client reaches the server: base URL and the credentials to send."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    expires_at: float | None = None
    probe_headers: dict[str, str] = field(default_factory=dict)
    """Added to sandserve's own health and readiness probes only (Daytona: they must not count as
    activity)."""
    token_header: str | None = None
    """Which of ``headers`` carries the endpoint's token (None: it has none)."""

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def probe_request_headers(self) -> dict[str, str]:
        return {**self.request_headers(), **self.probe_headers}


class Provider(Generic[HandleT]):
    """Where a server runs and how clients reach it. Subclasses register themselves by ``name``
    (``get_provider`` looks them up), so nothing outside ``providers/`` branches on a provider's name.
    ``HandleT`` is the provider's own typed record of a sandbox (``providers/handles.py``)."""

    registered: ClassVar[dict[str, type[Provider[Any]]]] = {}
    name: ClassVar[str]
    #: Seconds between polls of the log / exit code / readiness while booting.
    poll_interval: float
    #: Whether a failed boot keeps its sandbox by default (Daytona: the weights already downloaded).
    keeps_failed_sandboxes: bool
    #: The address the server listens on inside its sandbox.
    bind_host: ClassVar[str] = ALL_INTERFACES
    #: Whether the server runs elsewhere, kept up (and billed) until deleted, behind the provider's own auth.
    remote: ClassVar[bool] = True
    #: Seconds ``up`` waits for a first generation unless told otherwise (None: the spec's default).
    default_boot_timeout: ClassVar[float | None] = None
    #: The preset served when no model is named.
    default_preset: ClassVar[str] = DEFAULT_DAYTONA_PRESET

    #: Where a model's tool calls run for this provider's endpoints (``tools.sandboxes`` has a runner for
    #: each kind).
    tool_sandbox_kind: ClassVar[str] = TOOLS_ON_THIS_MACHINE

    #: The type of this provider's handles (its subclasses inherit it unless they name their own).
    handle_type: ClassVar[type[SandboxHandle]] = SandboxHandle

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Provider.registered[cls.name] = cls
            # ``SandboxHandle(name, ...)`` then makes this provider's handle type (a handle type that named
            # its provider itself is kept).
            if cls.handle_type is not SandboxHandle:
                SandboxHandle.handle_types.setdefault(cls.name, cls.handle_type)

    @classmethod
    def recognises(cls, url: str, header_names: frozenset[str]) -> bool:
        """Whether an endpoint known only by its URL and the headers it sends (lower-case names), as from
        ENDPOINT/TOKEN, is one this provider serves."""
        return False

    @classmethod
    def check_engine(cls, engine: type[Engine], model: str) -> None:
        """Refuse an engine this provider cannot run (before anything is created)."""

    #: Whether its sandboxes can have GPUs (``ServeSpec.resources`` means something here).
    offers_gpus: ClassVar[bool] = True
    #: The header its endpoints take their token in (auth mode token), and what sandserve's own probes add
    #: (``Exposure`` and ``Endpoint`` carry both; the ledger's migration reads them for older rows).
    token_header: ClassVar[str | None] = None
    probe_headers: ClassVar[dict[str, str]] = {}

    def settle(self, settings: ProviderSettings, resources: Resources) -> ProviderSettings:
        """This provider's own defaults for what the user did not say (``resolve_spec``)."""
        return settings

    def plan(self, spec: ServeSpec, head: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        """A dry run's plan: ``head`` (what is served, the engine's lines) and ``server`` (port, command,
        environment), with what this provider adds."""
        return {**head, **server, "boot_timeout": spec.boot_timeout}

    def gpu_capacity(self, spec: ServeSpec) -> tuple[dict[str, int] | None, str]:
        """Free units per GPU type for ``spec`` (spot or on demand), where the provider can say; else None
        and why not."""
        return None, f"{self.name} has no capacity answer"

    def auth_label(self, spec: ServeSpec) -> str:
        """How clients are authenticated, as ``Endpoint.auth`` records it."""
        return str(spec.auth)

    def preflight(self, spec: ServeSpec) -> list[str] | None:
        """Refuse a spec that cannot work (port taken, no credentials) before anything is created; return
        warnings worth showing (a check that could not be made, say)."""
        raise NotImplementedError

    def create(self, spec: ServeSpec, endpoint_id: str) -> HandleT:
        raise NotImplementedError

    # --- warm boots (providers with snapshots override these) ---

    def warm_boot_plan(self, spec: ServeSpec, *, activate: bool = True) -> WarmBootPlan | None:
        """Whether a boot of ``spec`` can start from its golden snapshot, and why (None: this provider
        keeps no snapshots). ``activate``: wake an inactive snapshot (a dry run only reports it)."""
        return None

    def create_warm(self, spec: ServeSpec, endpoint_id: str, plan: WarmBootPlan) -> HandleT:
        """Create from the plan's snapshot; fall back to ``create`` (recording why) if it is refused."""
        return self.create(spec, endpoint_id)

    def warm_boot(self, handle: HandleT) -> tuple[str | None, str | None]:
        """(the snapshot the sandbox was created from or None, the GPU type it got or None)."""
        return None, None

    def cache_root(self, handle: HandleT) -> str | None:
        """The directory the engine's caches go to inside the sandbox, kept by a snapshot (None: leave
        the engine's defaults)."""
        return None

    def restored_steps(self, handle: HandleT, spec: ServeSpec) -> frozenset[str]:
        """Boot steps whose output the new sandbox already holds (``weights``, ``compile``), as a snapshot
        brings them; asked before the server starts."""
        return frozenset()

    #: Whether it keeps golden snapshots (the methods below mean something).
    keeps_snapshots: ClassVar[bool] = False

    def capture_snapshot(self, handle: HandleT, spec: ServeSpec) -> CaptureOutcome:
        """Capture the spec's golden snapshot from a sandbox about to be deleted."""
        raise NotImplementedError

    def snapshots(self) -> list[SnapshotInfo]:
        return []

    def delete_snapshot(self, name: str) -> None:
        raise NotImplementedError

    def server_port(self, handle: HandleT) -> int:
        raise NotImplementedError

    def start(self, handle: HandleT, launch: Launch) -> None:
        raise NotImplementedError

    def read_log(self, handle: HandleT) -> str:
        """The whole log so far (cumulative)."""
        raise NotImplementedError

    def exit_code(self, handle: HandleT) -> int | None:
        """None while the server runs."""
        raise NotImplementedError

    def expose(self, handle: HandleT, spec: ServeSpec) -> Exposure:
        raise NotImplementedError

    def is_running(self, handle: HandleT) -> bool:
        raise NotImplementedError

    def delete(self, handle: HandleT) -> None:
        """Stop and remove the sandbox; succeeds if it is already gone."""
        raise NotImplementedError

    # --- colocated work: code run beside the server ---

    #: How a job calls Python where it runs.
    python_command: ClassVar[str] = "python3"

    def inside_access(self, handle: HandleT, served: Endpoint) -> InsideAccess:
        """The server as seen by code running beside it: its URL and the credentials it needs from there."""
        from sandserve.providers.colocated import InsideAccess

        return InsideAccess(served.url, served.api_key, served.token)

    def run_colocated(self, handle: HandleT, job: ColocatedJob, on_output: OnOutput) -> ColocatedOutcome:
        raise NotImplementedError
