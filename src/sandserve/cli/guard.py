"""Spend guardrails at the terminal: a yes before a paid GPU is created or everything is taken down.

On a terminal the plan is shown and a yes asked for; without one, the step is refused unless --yes was given
(a script must say so explicitly: nothing paid happens by accident). The library never asks: this lives here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from sandserve.cli.boot_view import ConsoleBootEvents
from sandserve.cli.console import err
from sandserve.errors import ConfirmationRequiredError, SandserveError
from sandserve.spec import Resources, ServeSpec

if TYPE_CHECKING:
    from sandserve.serve.receipt import BootReceipt


def on_a_terminal() -> bool:
    return sys.stdin.isatty()


def ask(question: str, refused_without_terminal: str, *, yes: bool) -> None:
    """Go on with a yes (typed, or --yes); raise otherwise."""
    if yes:
        return
    if not on_a_terminal():
        raise ConfirmationRequiredError(refused_without_terminal)
    if not click.confirm(question, default=False, err=True):
        raise SandserveError("Stopped: nothing was created or deleted.", hint=None)


class GuardedBootEvents(ConsoleBootEvents):
    """The console's boot events, plus warnings shown and the paid-GPU confirmation."""

    def __init__(self, *, yes: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.yes = yes

    def warning(self, message: str) -> None:
        from sandserve.cli.program import runnable

        err.print(f"[yellow]warning:[/] {runnable(message)}")

    def receipt(self, receipt: BootReceipt, previous: BootReceipt | None) -> None:
        from sandserve.cli.receipts import receipt_lines

        for line in receipt_lines(receipt, previous):
            err.print(line, markup=False, highlight=False)

    def confirm(self, spec: ServeSpec) -> None:
        if not spec.uses_gpu:
            return
        spot = ", spot" if spec.resources.spot else ""
        what = f"Creating a paid GPU sandbox ({gpu_text(spec.resources)}{spot})"
        if not self.yes and on_a_terminal():
            from sandserve.serve.plan import plan

            print_plan(plan(spec), to_stderr=True)
        ask(f"{what}: go ahead?", what, yes=self.yes)


def gpu_text(resources: Resources) -> str:
    """ "H100 or RTX-PRO-6000", "2 x H100 or 2 x MI355X"."""
    count = f"{resources.gpu_count} x " if resources.gpu_count > 1 else ""
    return " or ".join(f"{count}{gpu}" for gpu in resources.gpu_types)


def print_plan(plan: dict[str, Any], *, to_stderr: bool = False) -> None:
    from sandserve.cli.console import out

    console = err if to_stderr else out
    console.print("[bold]plan[/] (nothing created yet)")
    for key, value in plan.items():
        if key in ("ttl_minutes", "auto_stop_minutes"):
            continue
        if isinstance(value, dict):
            console.print(f"  {key}:")
            # Variables as the shell writes them; anything else as the plan's own lines.
            between = "=" if key in ("env", "settings_from", "secrets") else ": "
            for name, item in value.items():
                console.print(f"    {name}{between}{item}")
        else:
            console.print(f"  {key}: {value}")
