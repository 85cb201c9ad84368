"""What an inference engine is to the pipeline: its launch line, its log, and its dialect on the wire.

An engine knows how to launch its server, how to tell that it can really generate, how to read its start-up
log (boot phases, KV pool size), how to turn a fatal log into one sentence with the fix, and how its requests
are shaped (constraints, the reasoning dial, forcing a tool call, raw generation). It never runs anything
itself: providers run the command, the lifecycle watches it, the client sends what the engine shapes.

Engines register themselves by ``name`` (``Engine.registered``), so nothing outside ``engines/`` branches on
an engine's name: code asks the engine.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sandserve.engines.load_formats import LoadFields
from sandserve.errors import CapabilityError, ConfigError
from sandserve.masking import MASK, mask_argv, mask_env, mask_secrets
from sandserve.results import Capabilities, Constraint, ServerInfo

if TYPE_CHECKING:
    from sandserve.presets import Preset
    from sandserve.spec import GpuVendor, ServeSpec


@dataclass(frozen=True)
class Launch:
    """The server's command line and the environment it adds."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()
    """Values (not names) that must never be shown: API keys, tokens."""

    def shell_command(self) -> str:
        """One shell line, as a session command runs it (env assignments first)."""
        assignments = [f"{name}={shlex.quote(value)}" for name, value in self.env.items()]
        return " ".join([*assignments, *(shlex.quote(arg) for arg in self.argv)])

    def masked(self, text: str) -> str:
        return mask_secrets(text, self.secrets)

    def display_command(self) -> str:
        """The command line to show: known secrets and the value of every secret-named flag masked."""
        shown = (arg if arg == MASK else shlex.quote(arg) for arg in mask_argv(self.argv))
        return self.masked(" ".join(shown))

    def display_env(self) -> dict[str, str]:
        """The environment to show: known secrets and secret-named variables (HF_TOKEN, *_API_KEY) masked."""
        return {name: self.masked(value) for name, value in mask_env(self.env).items()}


@dataclass(frozen=True)
class ReadinessProbe:
    """A request that succeeds only once the model has really generated a token."""

    method: str
    path: str
    json: dict[str, Any] | None = None


@dataclass(frozen=True)
class Diagnosis:
    """A fatal start-up failure, read from the log, as one sentence and its fix."""

    summary: str
    fix: str


@dataclass(frozen=True)
class LogSignature:
    """A regular expression over the log and the diagnosis it stands for. Named groups of the pattern fill
    the same names in braces in ``summary`` and ``fix`` (the flag an engine refused, say)."""

    pattern: re.Pattern[str]
    summary: str
    fix: str

    @classmethod
    def of(cls, pattern: str, summary: str, fix: str) -> LogSignature:
        return cls(re.compile(pattern, re.MULTILINE), summary, fix)


#: SGLang's native raw-text route. The llama.cpp adapter serves it too, so a batch may name it on either
#: engine.
NATIVE_GENERATE_ROUTE = "/generate"


@dataclass(frozen=True)
class GenerateCall:
    """A call to one of this engine's own routes: the route and the JSON body (a raw-text generation, a
    tokenization, a chat template applied)."""

    path: str
    body: dict[str, Any]


class PrepareEvents(Protocol):
    """What an engine's prepare step reports (``serve.lifecycle.BootEvents`` is one)."""

    def status(self, message: str) -> None: ...

    def build_progress(self, done: int, total: int, message: str) -> None: ...


#: Turns a text into the model's token ids (the client's ``/tokenize`` call); used to force a tool call.
Tokenize = Callable[[str], list[Any]]


class Engine:
    """An inference engine. Subclasses that set ``name`` register themselves (``get_engine`` finds them)."""

    registered: ClassVar[dict[str, type[Engine]]] = {}
    name: ClassVar[str]
    #: How people write the engine's name ("SGLang", "llama.cpp").
    label: ClassVar[str]
    #: What ``owned_by`` says in its ``/v1/models`` (how an endpoint from the environment is recognised).
    owned_by: ClassVar[str]
    #: Whether it runs on a machine with no GPU (the local provider serves only these).
    runs_on_cpu: ClassVar[bool] = False
    #: Whether a stock serving image has it (a remote sandbox starts from one, with nothing of this machine's
    #: in it): False for an engine sandserve builds here and whose model files live here.
    runs_in_sandbox_image: ClassVar[bool] = True
    #: The stock image a sandbox starts from, per GPU vendor (its CUDA and ROCm builds of one release).
    sandbox_images: ClassVar[Mapping[GpuVendor, str]] = {}
    capabilities: ClassVar[Capabilities]
    readiness: ClassVar[ReadinessProbe]
    #: Boot phases in the order they happen, each with the log pattern that marks it.
    phase_patterns: ClassVar[tuple[tuple[str, re.Pattern[str]], ...]]
    signatures: ClassVar[tuple[LogSignature, ...]]
    #: Where the running server describes its capacity (queried once, at handoff).
    info_path: ClassVar[str]
    #: Its route that says what it is doing now (JSON), read by ``load_fields`` (None: it has none).
    load_route: ClassVar[str | None] = None
    #: Its Prometheus route (None: it has none).
    metrics_route: ClassVar[str | None] = "/metrics"
    #: Its metric names, by the load field each carries (``running``, ``queued``, ``generated``...).
    metric_names: ClassVar[Mapping[str, str]] = {}
    #: Whether sandserve itself compiles some constraints for this engine, so its output must be checked.
    checks_constrained_output: ClassVar[bool] = False
    #: Which step of a boot receipt each boot phase ends (phase -> step: weights, load, compile, graphs,
    #: warm-up); a phase not named here is a step of its own.
    receipt_steps: ClassVar[dict[str, str]] = {}

    def cache_env(self, root: str) -> dict[str, str]:
        """Environment pointing the engine's on-disk caches (compiled kernels, autotune results) into
        ``root``, so that a snapshot of the sandbox keeps them; empty for an engine that keeps none."""
        return {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Engine.registered[cls.name] = cls

    # --- choosing and preparing ---------------------------------------------------------------------------

    @classmethod
    def claims_model(cls, model: str) -> bool:
        """Whether a model reference with no preset is this engine's by its form (a ``.gguf`` file...)."""
        return False

    @classmethod
    def resolve_model(cls, model_id: str, preset: Preset | None) -> str:
        """The model reference as the engine will load it; raises when it cannot be loaded at all."""
        return model_id

    @classmethod
    def sandbox_image(cls, vendor: GpuVendor) -> str:
        """The stock image with this engine built for ``vendor``'s GPUs; refused where there is none."""
        image = cls.sandbox_images.get(vendor)
        if image is None:
            raise ConfigError(
                f"{cls.label} has no stock image for {vendor.value.upper()} GPUs.",
                hint="Choose a GPU type of another vendor (--gpu), or name an image with --image.",
            )
        return image

    @classmethod
    def gpu_share_bytes(cls, spec: ServeSpec, gpu_mib: int) -> int | None:
        """Bytes of one GPU of ``gpu_mib`` that this engine gives to weights and KV cache, for ``spec``
        (its flags, its GPU count); None for an engine that runs on no GPU."""
        return None

    @classmethod
    def planned(cls, spec: ServeSpec) -> Engine:
        """The engine as ``--dry-run`` shows it: nothing is built or written."""
        return cls()

    def prepare(self, spec: ServeSpec, events: PrepareEvents) -> tuple[ServeSpec, Engine]:
        """Make what the spec names real before launch (a binary to build, a model to write): the spec as it
        will be launched, and the engine ready to launch it."""
        return spec, self

    def plan_details(self, spec: ServeSpec) -> dict[str, Any]:
        """Engine-specific lines of a dry-run plan (the model as it will be loaded, the binary...)."""
        return {"model": spec.model}

    @classmethod
    def load_fields(cls, body: Any) -> LoadFields:
        """What its ``load_route`` answered, read into the shared load fields."""
        return LoadFields()

    # --- launching and watching ---------------------------------------------------------------------------

    def launch(self, spec: ServeSpec, *, host: str, port: int, api_key: str | None) -> Launch:
        raise NotImplementedError

    def kv_pool_tokens(self, log_text: str) -> int | None:
        raise NotImplementedError

    def summarise_info(self, data: dict[str, Any]) -> ServerInfo:
        """The capacity figures worth keeping from ``info_path`` (never a secret the server echoes back)."""
        raise NotImplementedError

    # --- the dialect: how requests are shaped --------------------------------------------------------------

    def constraint_fields(self, constraint: Constraint) -> dict[str, Any]:
        """Chat request fields (``extra_body``) enforcing a regex or EBNF constraint; a JSON schema goes as
        ``response_format`` on every engine."""
        raise NotImplementedError

    def constrained_chat_fields(self) -> dict[str, Any]:
        """Extra chat fields sent with any constraint."""
        return {}

    def constraint_route(self, kind: str) -> str:
        """How a constraint of ``kind`` is enforced, in a few words (for the tour's text)."""
        raise NotImplementedError

    def generate_call(
        self, model: str, text: str, constraint: Constraint | None, sampling: dict[str, Any]
    ) -> GenerateCall:
        """A raw-text continuation (no chat template): route and body. ``sampling`` holds
        ``max_new_tokens`` and, when given, ``temperature`` and ``stop``."""
        raise NotImplementedError

    def read_generation(self, answer: Any) -> tuple[str, str]:
        """The text of the answer to ``generate_call`` and how it finished: "stop" or "length" (its token
        counts are read like every answer's, by ``client.usage.usage_of``)."""
        raise NotImplementedError

    def reasoning_effort_fields(self, effort: str) -> tuple[dict[str, Any], str]:
        """Request fields asking a model of no known family for ``effort``, and a note on how honest that is;
        raises ``CapabilityError`` when the engine has no such dial."""
        raise CapabilityError("Reasoning effort", self.name, hint=f"{self.label} has no reasoning dial.")

    def brief_answer_fields(self) -> dict[str, Any]:
        """Fields that keep a structured answer from being preceded by long reasoning."""
        return {}

    def force_tool_call(
        self, params: dict[str, Any], tool_name: str, tool_specs: list[dict[str, Any]], tokenize: Tokenize
    ) -> dict[str, Any]:
        """``params`` changed so that the model's first move is a call to ``tool_name``."""
        return {**params, "tool_choice": {"type": "function", "function": {"name": tool_name}}}

    def after_forced_call(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` for the requests that follow a forced call."""
        return params

    def tokenize_call(self, text: str, *, parse_special: bool = True) -> GenerateCall | None:
        """The call that turns ``text`` into the model's token ids, answered as ``{"tokens": [...]}``;
        ``parse_special`` (llama-server's own default): ``<tool_call>``, ``<|im_start|>`` and the like count
        as one token each, as in a templated prompt. None: the engine has none."""
        return None

    def template_call(self, messages: list[dict[str, Any]]) -> GenerateCall | None:
        """The call that applies the model's chat template to ``messages``, answered as ``{"prompt": text}``.
        None: the engine has none."""
        return None


def phases_in(engine: Engine, log_text: str) -> list[str]:
    """The boot phases whose marker appears in ``log_text``, in boot order."""
    return [name for name, pattern in engine.phase_patterns if pattern.search(log_text)]


def diagnose(engine: Engine, log_text: str) -> Diagnosis | None:
    """The first known fatal signature found in the log (signatures are ordered most specific first)."""
    for signature in engine.signatures:
        match = signature.pattern.search(log_text)
        if match:
            found = match.groupdict()
            if not found:
                return Diagnosis(signature.summary, signature.fix)
            return Diagnosis(signature.summary.format_map(found), signature.fix.format_map(found))
    return None
