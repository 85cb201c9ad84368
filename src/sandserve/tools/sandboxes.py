"""Where a model's tool calls run: never in the caller's process.

- ``DaytonaToolSandbox`` (endpoints on Daytona): one ephemeral CPU sandbox, created on the first call,
  labelled as sandserve's tool sandbox for that endpoint, network blocked, running each call with
  ``process.code_run``; deleted on ``close()``. This is the real isolation boundary: a separate machine.
- ``LocalToolSandbox`` (local endpoints, ``tools.local_sandbox``): a fresh ``python -I`` per call inside a
  bubblewrap sandbox (read-only system, its own scratch folder, no user data unless the tool declares a path,
  no network, a process-count limit, its own PID namespace so every process of the call ends with it), with
  an audit hook as an extra layer. Where no such isolation is available it refuses to run model-written tools
  unless the caller opts in.

A tool's failure (a crash, bad arguments, a limit hit) is an outcome, not an exception: its text goes back to
the model as the tool message, which is how the standard loop lets a model recover.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, Self

from sandserve.providers.base import TOOLS_IN_A_DAYTONA_SANDBOX, TOOLS_ON_THIS_MACHINE
from sandserve.tools.declaration import Tool
from sandserve.tools.local_sandbox import LocalToolSandbox, network_namespace_prefix
from sandserve.tools.outcome import MAX_RESULT_CHARS, ToolOutcome, last_error_line

RESULT_MARKER = "__sandserve_tool_result__"


class ToolRunner(Protocol):
    """Runs one tool call somewhere isolated. Use as a context manager: ``close()`` releases what it holds."""

    @property
    def isolation(self) -> str: ...

    def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def tool_program(tool: Tool, arguments: dict[str, Any]) -> str:
    """A standalone Python program that calls the tool once and prints the outcome as JSON on a marked line
    (on stdout, since that is what a remote runner returns; a traceback would go to stderr)."""
    return (
        f"{tool.source}\n"
        "import json as _sandserve_json, traceback as _sandserve_traceback\n"
        "try:\n"
        f"    _sandserve_args = _sandserve_json.loads({json.dumps(arguments)!r})\n"
        f"    _sandserve_answer = {{'ok': True, 'value': {tool.name}(**_sandserve_args)}}\n"
        "except BaseException as _sandserve_exc:\n"
        "    _sandserve_answer = {'ok': False, 'error': ''.join(\n"
        "        _sandserve_traceback.format_exception_only(type(_sandserve_exc), _sandserve_exc)).strip()}\n"
        f"print({RESULT_MARKER!r} + _sandserve_json.dumps(_sandserve_answer, default=str))\n"
    )


def _outcome_from_output(output: str, exit_code: int | None) -> ToolOutcome:
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARKER):
            answer = json.loads(line[len(RESULT_MARKER) :])
            if answer.get("ok"):
                return ToolOutcome.success(answer.get("value"))
            return ToolOutcome.failure(str(answer.get("error")))
    reason = last_error_line(output) or f"the tool exited with code {exit_code} and no result"
    return ToolOutcome.failure(reason)


# --- Daytona ------------------------------------------------------------------------------------------------


class DaytonaToolSandbox:
    """Tool calls in a Daytona CPU sandbox (created on first use, deleted by ``close()``); the provider's
    ``DaytonaCodeSandbox`` creates it and runs each call."""

    def __init__(
        self,
        endpoint_id: str | None = None,
        *,
        client: Any = None,
        timeout: float = 30.0,
        allow_network: bool = False,
        auto_stop_minutes: int = 15,
    ) -> None:
        """``auto_stop_minutes``: the sandbox is ephemeral, so if this process dies before ``close()``,
        Daytona stops, and so deletes, it after that much idle time."""
        from sandserve.providers.daytona_code import DaytonaCodeSandbox

        self.timeout = timeout
        self._box = DaytonaCodeSandbox(
            endpoint_id, client=client, allow_network=allow_network, auto_stop_minutes=auto_stop_minutes
        )
        self.isolation = self._box.isolation

    @property
    def sandbox_id(self) -> str | None:
        return self._box.sandbox_id

    def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        if tool.paths:  # checked before a sandbox is made for it
            return ToolOutcome.failure(
                f"{tool.name} declares {', '.join(tool.paths)}: paths of the machine that declared it, "
                "which a Daytona tool sandbox does not have (run it for a local endpoint, or give it the "
                "data as arguments)"
            )
        ran = self._box.run_python(tool_program(tool, arguments), timeout=self.timeout, what=tool.name)
        if ran.timed_out:
            stopped = f"{tool.name} did not finish within {self.timeout:g} s and was stopped"
            return ToolOutcome.failure(stopped)
        return _outcome_from_output(ran.output, ran.exit_code)

    def close(self) -> None:
        self._box.close()

    def __enter__(self) -> DaytonaToolSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _on_this_machine(endpoint_id: str | None, **options: Any) -> ToolRunner:
    return LocalToolSandbox(**options)


#: The runner for each kind of tool sandbox a provider names (``Provider.tool_sandbox_kind``).
TOOL_SANDBOXES: dict[str, Callable[..., ToolRunner]] = {
    TOOLS_ON_THIS_MACHINE: _on_this_machine,
    TOOLS_IN_A_DAYTONA_SANDBOX: DaytonaToolSandbox,
}


def tool_runner_for(endpoint: Any, **options: Any) -> ToolRunner:
    """The runner that fits where the endpoint runs, as its provider says: its own Daytona CPU sandbox, or a
    local subprocess.

    An endpoint reached through ENDPOINT/TOKEN belongs to the provider the ledger knows its URL under, or else
    to the one that recognises it (Daytona: a preview token or a preview host); its tools then run where
    that provider's do (or fail clearly for want of a key), never silently on this machine."""
    return TOOL_SANDBOXES[tool_sandbox_kind(endpoint)](getattr(endpoint, "id", None), **options)


def tool_sandbox_kind(endpoint: Any) -> str:
    """Which kind of tool sandbox the endpoint's provider runs tool calls in (see ``TOOL_SANDBOXES``)."""
    from sandserve.providers import find_provider, recognise_provider

    provider = find_provider(str(getattr(endpoint, "provider", "")))
    if provider is None:
        url = str(getattr(endpoint, "url", ""))
        named = _ledger_provider_of(url)
        provider = find_provider(named) if named else None
        if provider is None and named is None:
            header_names = frozenset(name.lower() for name in getattr(endpoint, "headers", {}) or {})
            provider = recognise_provider(url, header_names)
    return provider.tool_sandbox_kind if provider is not None else TOOLS_ON_THIS_MACHINE


def _ledger_provider_of(url: str) -> str | None:
    """The provider the ledger records an endpoint at ``url`` under (None: none it knows, or no ledger)."""
    from sandserve.serve.ledger import Registry

    try:
        found = Registry().find_by_url(url)
    except Exception:
        return None
    return found.provider if found else None


__all__ = [
    "MAX_RESULT_CHARS",
    "DaytonaToolSandbox",
    "LocalToolSandbox",
    "ToolOutcome",
    "ToolRunner",
    "network_namespace_prefix",
    "tool_program",
    "tool_runner_for",
    "tool_sandbox_kind",
]
