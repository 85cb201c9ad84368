"""Code run beside an endpoint's server: `sandserve exec` / `sandserve run` and ``Endpoint.exec`` / ``.run``.

On Daytona the code runs inside the endpoint's own sandbox and reaches the server at http://localhost:PORT
(no preview proxy, no token); locally it runs on this machine against the local server. Either way it finds
the server in ENDPOINT (+ OPENAI_BASE_URL, ANTHROPIC_BASE_URL, MODEL, and the API key when the server wants
one), its output is streamed, and the files it writes under ``out/`` come back into ``output_dir``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandserve.endpoint import Endpoint
from sandserve.errors import ColocatedRunError, ConfigError
from sandserve.providers import get_provider
from sandserve.providers.colocated import OUTPUT_DIR, ColocatedJob, OnOutput
from sandserve.serve.ledger import Record, Registry, State, ledger_of


@dataclass
class ColocatedResult:
    exit_code: int
    where: str
    files: list[Path] = field(default_factory=list)
    """The files brought back, where they now are on this machine."""


def _record_for(endpoint: Endpoint | str | None) -> Record:
    if isinstance(endpoint, Endpoint):
        registry = ledger_of(endpoint)
        if endpoint.id == "env":
            found = registry.find_by_url(endpoint.url)
            if found is None:
                raise ConfigError(
                    f"{endpoint.url} (from ENDPOINT) is not in this machine's ledger, so there is no sandbox "
                    "to run code in.",
                    hint="Name an endpoint that `sandserve ls` lists.",
                )
            return found
        return registry.get(endpoint.id)
    return Registry().resolve(endpoint)


def run_command(
    endpoint: Endpoint | str | None,
    command: str,
    *,
    uploads: dict[str, bytes] | None = None,
    output_dir: Path | str = OUTPUT_DIR,
    on_output: OnOutput | None = None,
    timeout: float | None = None,
) -> ColocatedResult:
    """Run a shell ``command`` beside the endpoint's server; files it writes under ``out/`` land in
    ``output_dir`` here."""
    record = _record_for(endpoint)
    if record.state is not State.READY or record.endpoint is None:
        raise ColocatedRunError(
            f"Endpoint {record.id} is {record.shown_state}: there is no server to run beside.",
            hint=f"`sandserve status {record.id}` shows why; `sandserve up` brings one up.",
        )
    provider = get_provider(record.provider)
    served = record.endpoint
    inside = provider.inside_access(record.sandbox, served)
    env = {"ENDPOINT": inside.url, "OPENAI_BASE_URL": f"{inside.url}/v1", "MODEL": served.model}
    env["OPENAI_API_KEY"] = inside.api_key or "EMPTY"
    env["TOKEN"] = inside.token  # the guide's clients read it unconditionally
    # The Anthropic SDK and agent tools too: a key goes as a Bearer token (SGLang reads no x-api-key).
    env["ANTHROPIC_BASE_URL"] = inside.url
    env["ANTHROPIC_AUTH_TOKEN" if inside.api_key else "ANTHROPIC_API_KEY"] = inside.api_key or "EMPTY"
    job = ColocatedJob(command=command, env=env, uploads=dict(uploads or {}), timeout=timeout)
    outcome = provider.run_colocated(record.sandbox, job, on_output or (lambda _text: None))
    written = []
    target = Path(output_dir)
    for name, content in outcome.files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return ColocatedResult(outcome.exit_code, outcome.where, written)


def exec_argv(endpoint: Endpoint | str | None, argv: Sequence[str], **options: object) -> ColocatedResult:
    """``sandserve exec [ID] -- CMD ARGS...``: the words are quoted as given, never re-split."""
    if not argv:
        raise ConfigError(
            "Nothing to run.", hint="Give the command after --, e.g. `sandserve exec -- nvidia-smi`."
        )
    return run_command(endpoint, shlex.join(argv), **options)  # type: ignore[arg-type]


def run_script(
    endpoint: Endpoint | str | None,
    script: Path | str,
    *,
    args: Sequence[str] = (),
    upload: Sequence[Path | str] = (),
    **options: object,
) -> ColocatedResult:
    """``sandserve run [ID] SCRIPT.py [--upload PATH...]``: the script and the uploads go up, by file name."""
    script = Path(script)
    files = {script.name: _read(script)}
    for item in upload:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                files[str(Path(path.name) / child.relative_to(path))] = child.read_bytes()
        else:
            files[path.name] = _read(path)
    record = _record_for(endpoint)
    python = get_provider(record.provider).python_command
    command = " ".join([python, shlex.quote(script.name), *map(shlex.quote, args)])
    return run_command(record.id, command, uploads=files, **options)  # type: ignore[arg-type]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}", hint="Check the path.") from exc
