"""`sandserve fleet`: many endpoints behind one SGLang Model Gateway, used as one endpoint. Parses and prints;
the work is in `sandserve.fleet.core` (imported inside each verb, so `sandserve --help` stays fast)."""

from __future__ import annotations

import json
from typing import Any

import click

from sandserve.cli._app import main, reports_errors, sigterm_as_interrupt
from sandserve.cli.values import PORT, SECONDS


@main.group()
def fleet() -> None:
    """Many endpoints behind one SGLang Model Gateway (sglang-router) with cache-aware routing, as ONE
    endpoint."""


@fleet.command("up")
@click.option(
    "--workers",
    "-n",
    type=click.IntRange(1, 256),
    default=2,
    show_default=True,
    help="How many endpoints to bring up.",
)
@click.option(
    "--policy",
    default="cache_aware",
    show_default=True,
    metavar="POLICY",
    help="How the gateway routes: cache_aware, round_robin, random or power_of_two.",
)
@click.option(
    "--provider",
    type=click.Choice(["local", "daytona"]),
    help="Where the workers run. Default: daytona when DAYTONA_API_KEY is set, else local.",
)
@click.option(
    "--model", metavar="PRESET|HF_ID|PATH", help="What every worker serves (as for `sandserve up`)."
)
@click.option(
    "--gpu", "gpus", multiple=True, metavar="TYPE", help="GPU type in order of preference (repeat)."
)
@click.option("--boot-timeout", type=SECONDS, help="Seconds each worker may take to generate.")
@click.option("--gateway-port", type=PORT, help="The gateway's port on 127.0.0.1 (default: a free one).")
@click.option(
    "--public-gateway", is_flag=True, help="No API key on the gateway (it listens on 127.0.0.1 only)."
)
@click.option(
    "--gateway-arg",
    "gateway_args",
    multiple=True,
    metavar="ARG",
    help="Extra flag for sglang-router (repeat; e.g. --gateway-arg=--cache-threshold --gateway-arg=0.5).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the fleet as JSON instead of export lines.")
@click.option("--show-logs", is_flag=True, help="Echo the workers' start-up logs (labelled) to stderr.")
@reports_errors
def fleet_up(
    workers: int,
    policy: str,
    provider: str | None,
    model: str | None,
    gpus: tuple[str, ...],
    boot_timeout: float | None,
    gateway_port: int | None,
    public_gateway: bool,
    gateway_args: tuple[str, ...],
    as_json: bool,
    show_logs: bool,
) -> None:
    """Bring WORKERS endpoints up behind one gateway and print how to reach it.

    Progress goes to stderr; stdout gets only the export lines (ENDPOINT = the gateway, OPENAI_API_KEY = its
    key), so `eval "$(sandserve fleet up --workers 2)"` works. Workers serve with their own API keys (auth
    mode key), since the gateway can send a worker nothing else.
    """
    from sandserve.cli.console import ConsoleBootEvents, err
    from sandserve.fleet.core import fleet_up as bring_up
    from sandserve.serve.resolve import resolve_spec

    overrides: dict[str, Any] = {
        key: value
        for key, value in {"gpus": tuple(gpus) or None, "boot_timeout": boot_timeout}.items()
        if value is not None
    }
    spec = resolve_spec(model, provider=provider, auth="key", **overrides)
    with sigterm_as_interrupt():
        result = bring_up(
            spec,
            workers,
            policy,
            public_gateway=public_gateway,
            gateway_port=gateway_port,
            gateway_args=gateway_args,
            events=ConsoleBootEvents(show_log=show_logs),
        )
    if as_json:
        click.echo(json.dumps(_fleet_json(result), indent=2))
    else:
        for line in result.endpoint.export_lines():
            click.echo(line)
    err.print("")
    err.print(
        f"[bold green]ready[/]: {result.id}: {len(result.members)} worker(s) behind sglang-router "
        f"({result.policy}) at {result.url}"
    )
    for member in result.members:
        err.print(f"  worker {member.endpoint_id}  {member.url}")
    err.print(f"  more:   sandserve fleet add {result.id}")
    err.print(f"  status: sandserve fleet status {result.id}")
    err.print(f"  stop:   sandserve fleet down {result.id}")


@fleet.command("add")
@click.argument("fleet_id", required=False)
@click.option("--show-logs", is_flag=True, help="Echo the worker's start-up log to stderr.")
@reports_errors
def fleet_add(fleet_id: str | None, show_logs: bool) -> None:
    """Bring one more worker up and register it while the fleet serves (default: the one fleet up)."""
    from sandserve.cli.console import ConsoleBootEvents, err
    from sandserve.fleet.core import add_worker

    with sigterm_as_interrupt():
        member = add_worker(fleet_id, events=ConsoleBootEvents(show_log=show_logs))
    err.print(f"[green]added[/] {member.endpoint_id} ({member.url}) as gateway worker {member.worker_id}")


@fleet.command("remove")
@click.argument("fleet_id")
@click.argument("worker_endpoint_id")
@reports_errors
def fleet_remove(fleet_id: str, worker_endpoint_id: str) -> None:
    """Deregister a worker from the gateway, then take its endpoint down."""
    from sandserve.cli.console import err
    from sandserve.fleet.core import remove_worker

    member = remove_worker(fleet_id, worker_endpoint_id)
    err.print(f"[green]removed[/] {member.endpoint_id} from {fleet_id} and took it down")


@fleet.command("status")
@click.argument("fleet_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def fleet_status(fleet_id: str | None, as_json: bool) -> None:
    """Show fleets (default: every fleet up): the gateway, the policy, and each worker's health as the
    gateway sees it."""
    import dataclasses

    from sandserve.fleet.core import fleet_status as statuses_of

    statuses = statuses_of(fleet_id)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(status) for status in statuses], indent=2))
        return
    from rich.table import Table

    from sandserve.cli.console import out

    if not statuses:
        out.print("no fleets (start one with `sandserve fleet up`)")
        return
    for status in statuses:
        gateway = "[green]running[/]" if status.gateway_running else "[red]not running[/]"
        out.print(
            f"[bold]{status.id}[/]  {status.state}  gateway {gateway} at {status.url or '-'}  "
            f"policy {status.policy}"
        )
        table = Table("worker", "url", "gateway sees", "load", "server", "gateway id")
        for worker in status.workers:
            table.add_row(
                worker.endpoint_id or "[dim](not ours)[/]",
                worker.url,
                _health(worker.healthy),
                "-" if worker.load is None else str(worker.load),
                _running(worker.running),
                worker.worker_id or "-",
            )
        out.print(table)


def _health(healthy: bool | None) -> str:
    return {True: "[green]healthy[/]", False: "[red]unhealthy[/]", None: "[dim]not listed[/]"}[healthy]


def _running(running: bool | None) -> str:
    return {True: "[green]running[/]", False: "[red]gone[/]", None: "[dim]?[/]"}[running]


@fleet.command("down")
@click.argument("fleet_id", required=False)
@reports_errors
def fleet_down(fleet_id: str | None) -> None:
    """Stop the gateway and take every worker down (default: the one fleet up)."""
    from sandserve.cli.console import err
    from sandserve.fleet.core import fleet_down as take_down

    err.print(f"[green]down[/] {take_down(fleet_id)} (gateway and workers)")


def _fleet_json(result: Any) -> dict[str, Any]:
    return {
        "id": result.id,
        "endpoint": result.url,
        "base_url": result.endpoint.base_url,
        "model": result.endpoint.model,
        "api_key": result.endpoint.api_key,
        "policy": result.policy,
        "members": [
            {"endpoint_id": m.endpoint_id, "worker_id": m.worker_id, "url": m.url} for m in result.members
        ],
        "log_path": result.gateway.log_path,
    }
