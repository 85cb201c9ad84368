"""A Daytona CPU sandbox that runs Python programs: where an endpoint's tool calls run (``tools.sandboxes``).

One ephemeral sandbox, created on the first program, labelled as sandserve's tool sandbox for its endpoint,
network blocked unless asked, each program run with ``process.code_run``; deleted on ``close()``. If this
process dies first, Daytona stops (and so deletes) it after ``auto_stop_minutes`` idle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sandserve.errors import SandserveError, ToolSandboxError

LABEL_ROLE = "sandserve.role"
LABEL_TOOLS_FOR = "sandserve.tools-for"


@dataclass(frozen=True)
class CodeRun:
    output: str
    exit_code: int | None
    timed_out: bool = False


class DaytonaCodeSandbox:
    isolation = "Daytona CPU sandbox (separate machine, network blocked)"

    def __init__(
        self,
        endpoint_id: str | None = None,
        *,
        client: Any = None,
        allow_network: bool = False,
        auto_stop_minutes: int = 15,
    ) -> None:
        self.endpoint_id = endpoint_id or "none"
        self.allow_network = allow_network
        self.auto_stop_minutes = auto_stop_minutes
        self._client = client
        self._sandbox: Any = None

    @property
    def sandbox_id(self) -> str | None:
        return self._sandbox.id if self._sandbox is not None else None

    def _daytona(self) -> Any:
        if self._client is None:
            from sandserve.providers.daytona import DaytonaProvider

            try:
                self._client = DaytonaProvider().client
            except SandserveError as exc:
                raise ToolSandboxError(
                    "this endpoint runs on Daytona, so its tool calls run in a Daytona CPU sandbox, and "
                    f"none can be created: {exc.message} {exc.hint or ''}".strip()
                ) from exc
        return self._client

    def _ensure_sandbox(self) -> Any:
        if self._sandbox is not None:
            return self._sandbox
        from daytona import CreateSandboxFromSnapshotParams, DaytonaError

        params = CreateSandboxFromSnapshotParams(
            language="python",
            ephemeral=True,
            auto_stop_interval=self.auto_stop_minutes,
            network_block_all=not self.allow_network,
            labels={"sandserve": "1", LABEL_ROLE: "tools", LABEL_TOOLS_FOR: self.endpoint_id},
        )
        try:
            self._sandbox = self._daytona().create(params, timeout=120)
        except DaytonaError as exc:
            raise ToolSandboxError(f"creating the CPU sandbox failed ({exc})") from exc
        return self._sandbox

    def run_python(self, program: str, *, timeout: float, what: str) -> CodeRun:
        """Run ``program`` (Python source); a run past ``timeout`` is stopped and says so."""
        from daytona import DaytonaError, DaytonaTimeoutError
        from daytona_toolbox_api_client.exceptions import ApiException

        sandbox = self._ensure_sandbox()
        try:
            response = sandbox.process.code_run(program, timeout=math.ceil(timeout))
        except DaytonaTimeoutError:
            return CodeRun("", None, timed_out=True)
        except ApiException as exc:
            # code_run (SDK 0.226) lets the toolbox client's own exception through, unlike the other calls.
            if exc.status == 408:
                return CodeRun("", None, timed_out=True)
            raise ToolSandboxError(
                f"running {what} in sandbox {sandbox.id} failed ({exc.status}: {exc.reason})"
            ) from exc
        except DaytonaError as exc:
            raise ToolSandboxError(f"running {what} in sandbox {sandbox.id} failed ({exc})") from exc
        return CodeRun(response.result or "", response.exit_code)

    def close(self) -> None:
        if self._sandbox is None:
            return
        from daytona import DaytonaError

        sandbox, self._sandbox = self._sandbox, None
        try:
            self._daytona().delete(sandbox, timeout=60)
        except DaytonaError as exc:
            raise ToolSandboxError(
                f"deleting the tool sandbox {sandbox.id} failed ({exc}); it is ephemeral and stops (and is "
                f"deleted) after {self.auto_stop_minutes} idle minutes"
            ) from exc
