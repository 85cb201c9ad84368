"""What an inference engine is to the pipeline: pure functions of a ServeSpec and of the server's log.

An engine knows how to launch its server, how to tell that it can really generate, how to read its start-up
log (boot phases, KV pool size) and how to turn a fatal log into one sentence with the fix. It never runs
anything itself: providers run the command, the lifecycle watches it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sandserve.masking import MASK, mask_argv, mask_env, mask_secrets
from sandserve.results import Capabilities

if TYPE_CHECKING:
    from sandserve.spec import ServeSpec


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
    """A regular expression over the log and the diagnosis it stands for."""

    pattern: re.Pattern[str]
    summary: str
    fix: str

    @classmethod
    def of(cls, pattern: str, summary: str, fix: str) -> LogSignature:
        return cls(re.compile(pattern, re.MULTILINE), summary, fix)


class Engine(Protocol):
    name: str
    capabilities: Capabilities
    readiness: ReadinessProbe
    #: Boot phases in the order they happen, each with the log pattern that marks it.
    phase_patterns: tuple[tuple[str, re.Pattern[str]], ...]
    signatures: tuple[LogSignature, ...]
    #: Where the running server describes its capacity (queried once, at handoff).
    info_path: str

    def summarise_info(self, data: dict[str, Any]) -> dict[str, Any]:
        """The capacity figures worth keeping (never a secret the server echoes back)."""
        ...

    def launch(self, spec: ServeSpec, *, host: str, port: int, api_key: str | None) -> Launch: ...

    def kv_pool_tokens(self, log_text: str) -> int | None: ...


def phases_in(engine: Engine, log_text: str) -> list[str]:
    """The boot phases whose marker appears in ``log_text``, in boot order."""
    return [name for name, pattern in engine.phase_patterns if pattern.search(log_text)]


def diagnose(engine: Engine, log_text: str) -> Diagnosis | None:
    """The first known fatal signature found in the log (signatures are ordered most specific first)."""
    for signature in engine.signatures:
        if signature.pattern.search(log_text):
            return Diagnosis(signature.summary, signature.fix)
    return None
