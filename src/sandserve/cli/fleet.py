"""`sandserve fleet`: many endpoints behind one SGLang Model Gateway, used as one endpoint. Parses and prints;
the work is in `sandserve.fleet` (imported inside each verb, so `sandserve --help` stays fast)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from sandserve.cli._app import SuggestingGroup, main, reports_errors, sigterm_as_interrupt
from sandserve.cli.program import program, runnable
from sandserve.cli.values import PORT, SECONDS, Number, gpu_options

if TYPE_CHECKING:
    from sandserve.cli.tables import Column

#: The autoscaler's seconds and ratios: finite, 0 allowed (its own check refuses what cannot work).
SCALER_NUMBER = Number(0.0, 7 * 86_400)


def _scaler_options(command: Callable[..., None]) -> Callable[..., None]:
    """The autoscaler's knobs, shared by `fleet up` and `fleet scale` (unset: the defaults or the current)."""
    options = [
        (
            "--queue-per-worker",
            "queue_per_worker",
            "Queued requests per worker that count as short of workers.",
        ),
        ("--up-delay", "up_delay", "Seconds requests must stay queued before a worker is added."),
        ("--down-delay", "down_delay", "Seconds the fleet must stay idle before a worker is removed."),
        ("--interval", "interval", "Seconds between two looks at the workers' loads."),
        ("--backoff", "backoff", "Seconds to wait after a provider refused a worker (quota, capacity)."),
        ("--hold-timeout", "hold_timeout", "At zero workers: seconds a request may wait for one to boot."),
        ("--drain-timeout", "drain_timeout", "Seconds a leaving worker may take to finish its requests."),
        ("--restart-backoff", "restart_backoff", "Seconds before a dead autoscaler is started again."),
    ]
    for flag, name, text in reversed(options):
        command = click.option(flag, name, type=SCALER_NUMBER, help=text)(command)
    return command


@main.group(cls=SuggestingGroup)
def fleet() -> None:
    """Many endpoints behind one model gateway (sglang-router or smg) with cache-aware routing, as ONE
    endpoint; with --min/--max an autoscaler sizes it from the engines' own queues."""


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
@gpu_options
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
    help="Extra flag for the gateway (repeat; e.g. --gateway-arg=--cache-threshold --gateway-arg=0.5).",
)
@click.option(
    "--gateway",
    "gateway_name",
    type=click.Choice(["sglang-router", "smg"]),
    default="sglang-router",
    show_default=True,
    help="Which model gateway routes (behind smg every worker takes the gateway's key: it passes the "
    "client's key on). Anthropic Messages (/v1/messages) need smg.",
)
@click.option(
    "--min",
    "min_workers",
    type=click.IntRange(0, 256),
    help="Autoscale: never fewer workers (0: scale to zero when idle).",
)
@click.option("--max", "max_workers", type=click.IntRange(1, 256), help="Autoscale: never more workers.")
@_scaler_options
@click.option("--json", "as_json", is_flag=True, help="Print the fleet as JSON instead of export lines.")
@click.option("--show-logs", is_flag=True, help="Echo the workers' start-up logs (labelled) to stderr.")
@reports_errors
def fleet_up(
    workers: int,
    policy: str,
    provider: str | None,
    model: str | None,
    gpus: tuple[str, ...],
    gpu_count: int | None,
    boot_timeout: float | None,
    gateway_port: int | None,
    public_gateway: bool,
    gateway_args: tuple[str, ...],
    gateway_name: str,
    min_workers: int | None,
    max_workers: int | None,
    as_json: bool,
    show_logs: bool,
    **scaler: float | None,
) -> None:
    """Bring WORKERS endpoints up behind one gateway and print how to reach it.

    Progress goes to stderr; stdout gets only the export lines (ENDPOINT = the gateway, OPENAI_API_KEY = its
    key), so `eval "$(sandserve fleet up --workers 2)"` works. Workers serve with their own API keys (auth
    mode key), since the gateway can send a worker nothing else (behind smg: the gateway's key, which smg
    passes on). With --min/--max an autoscaler keeps the fleet between those bounds."""
    from sandserve.cli.boot_view import ConsoleBootEvents
    from sandserve.cli.console import err
    from sandserve.fleet import ScalerSettings
    from sandserve.fleet import fleet_up as bring_up
    from sandserve.serve.resolve import resolve_spec

    spec = resolve_spec(
        model,
        provider=provider,
        auth="key",
        gpus=gpus or None,
        gpu_count=gpu_count,
        boot_timeout=boot_timeout,
    )
    scaling = None
    if min_workers is not None or max_workers is not None:
        low = min_workers if min_workers is not None else 1
        scaling = ScalerSettings(
            min_workers=low,
            max_workers=max_workers if max_workers is not None else max(low, workers),
            **{key: value for key, value in scaler.items() if value is not None},  # type: ignore[arg-type]
        )
    with sigterm_as_interrupt():
        result = bring_up(
            spec,
            workers,
            policy,
            public_gateway=public_gateway,
            gateway_port=gateway_port,
            gateway_args=gateway_args,
            gateway=gateway_name,
            scaling=scaling,
            events=ConsoleBootEvents(show_log=show_logs),
        )
    if as_json:
        click.echo(json.dumps(_fleet_json(result), indent=2))
    else:
        for line in result.endpoint.export_lines():
            click.echo(line)
    err.print("")
    err.print(
        f"[bold green]ready[/]: {result.id}: {len(result.members)} worker(s) behind {result.gateway_name} "
        f"({result.policy}) at {result.url}"
    )
    if scaling is not None:
        err.print(
            f"  autoscaler: {scaling.min_workers}..{scaling.max_workers} workers "
            + runnable(f"(`sandserve fleet scale {result.id} --min N --max N` changes it)")
        )
    for member in result.members:
        err.print(f"  worker {member.endpoint_id}  {member.url}")
    err.print(f"  more:   {program()} fleet add {result.id}")
    err.print(f"  status: {program()} fleet status {result.id}")
    err.print(f"  stop:   {program()} fleet down {result.id}")


@fleet.command("add")
@click.argument("fleet_id", required=False)
@click.option("--show-logs", is_flag=True, help="Echo the worker's start-up log to stderr.")
@reports_errors
def fleet_add(fleet_id: str | None, show_logs: bool) -> None:
    """Bring one more worker up and register it while the fleet serves (default: the one fleet up)."""
    from sandserve.cli.boot_view import ConsoleBootEvents
    from sandserve.cli.console import err
    from sandserve.fleet import add_worker

    with sigterm_as_interrupt():
        member = add_worker(fleet_id, events=ConsoleBootEvents(show_log=show_logs))
    err.print(f"[green]added[/] {member.endpoint_id} ({member.url}) as gateway worker {member.worker_id}")


@fleet.command("remove")
@click.argument("fleet_id")
@click.argument("worker_endpoint_id")
@reports_errors
def fleet_remove(fleet_id: str, worker_endpoint_id: str) -> None:
    """Deregister a worker from the gateway, let its in-flight requests finish, then take its endpoint
    down."""
    from sandserve.cli.console import err
    from sandserve.fleet import remove_worker

    member = remove_worker(fleet_id, worker_endpoint_id)
    err.print(f"[green]removed[/] {member.endpoint_id} from {fleet_id}: drained, then taken down")


@fleet.command("scale")
@click.argument("fleet_id", required=False)
@click.option(
    "--min",
    "min_workers",
    type=click.IntRange(0, 256),
    help="Never fewer workers (0: scale to zero when idle).",
)
@click.option("--max", "max_workers", type=click.IntRange(1, 256), help="Never more workers.")
@_scaler_options
@reports_errors
def fleet_scale(
    fleet_id: str | None, min_workers: int | None, max_workers: int | None, **scaler: float | None
) -> None:
    """Change a serving fleet's autoscaling bounds (starts an autoscaler if it has none)."""
    from sandserve.cli.console import err
    from sandserve.fleet import scale_fleet

    changes: dict[str, Any] = {key: value for key, value in scaler.items() if value is not None}
    settings = scale_fleet(fleet_id, min_workers=min_workers, max_workers=max_workers, **changes)
    err.print(
        f"[green]scaling[/] {fleet_id or 'the fleet'} between {settings.min_workers} and "
        f"{settings.max_workers} worker(s) (up after {settings.up_delay:g} s queued, down after "
        f"{settings.down_delay:g} s idle)"
    )


@fleet.command("status")
@click.argument("fleet_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def fleet_status(fleet_id: str | None, as_json: bool) -> None:
    """Show fleets (default: every fleet up): the gateway, the policy, each worker's health (as the gateway
    sees it) and load (running, queued, cache hits: from its engine), and the autoscaler's last decisions."""
    import dataclasses

    from sandserve.fleet import fleet_status as statuses_of

    statuses = statuses_of(fleet_id)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(status) for status in statuses], indent=2))
        return
    from sandserve.cli.console import out
    from sandserve.cli.tables import show_table

    if not statuses:
        out.print(runnable("no fleets (start one with `sandserve fleet up`)"))
        return
    for status in statuses:
        gateway = "[green]running[/]" if status.gateway_running else "[red]not running[/]"
        out.print(
            f"[bold]{status.id}[/]  {status.state}  {status.gateway} {gateway} at {status.url or '-'}  "
            f"policy {status.policy}"
        )
        if status.degraded:
            out.print(f"  [yellow]degraded:[/] {status.degraded}")
        rows = [
            [
                worker.endpoint_id or "(not ours)",
                worker.url,
                _HEALTH[worker.healthy],
                _RUNNING[worker.running],
                worker.requests_running,
                worker.requests_queued,
                None if worker.cache_hit_rate is None else f"{worker.cache_hit_rate:.0%}",
                worker.boot,
                worker.worker_id,
            ]
            for worker in status.workers
        ]
        if status.workers:
            # The worker's id is what `fleet remove` takes: shown whole at any width (cli/tables.py).
            show_table(_worker_columns(), rows)
        else:
            out.print("  no worker up")
        if status.scaler is not None:
            _print_scaler(status.scaler)


def _print_scaler(scaler: dict[str, Any]) -> None:
    import datetime

    from sandserve.cli.console import out

    settings = scaler.get("settings", {})
    state = (
        "[green]running[/]" if scaler["running"] else f"[red]{scaler['state']}[/] (log: {scaler['log_path']})"
    )
    if scaler["running"] and scaler.get("restarting"):
        state = "[yellow]restarting[/]"
    out.print(
        f"  autoscaler {scaler['id']} {state}: {settings.get('min_workers')}..{settings.get('max_workers')} "
        f"workers, up after {settings.get('up_delay')} s queued, down after {settings.get('down_delay')} s "
        "idle"
    )
    if scaler.get("now"):
        out.print(f"    now: {scaler['now']}")
    if scaler.get("restarting"):
        again = scaler["restarting"]
        when = datetime.datetime.fromtimestamp(again["at"] + again["delay_s"]).strftime("%H:%M:%S")
        out.print(f"    it {again['reason']}; a new one starts at {when} (restart {again['restarts']})")
    if scaler.get("backoff"):
        backoff = scaler["backoff"]
        out.print(f"    [yellow]backing off[/] ({backoff['seconds_left']} s left): {backoff['reason']}")
    if scaler.get("holder_worker_id"):
        out.print(f"    at zero workers: {scaler.get('held', 0)} request(s) held until a worker boots")
    if scaler.get("cold_starts"):
        starts = ", ".join(f"{seconds:.1f} s" for seconds in scaler["cold_starts"][-5:])
        out.print(f"    cold starts (request held at zero -> answered by a new worker): {starts}")
    for decision in scaler.get("decisions", [])[-5:]:
        at = datetime.datetime.fromtimestamp(decision["at"]).strftime("%H:%M:%S")
        out.print(f"    {at} {decision['action']}: {decision['reason']}")


_HEALTH = {True: "healthy", False: "unhealthy", None: "not listed"}
_RUNNING = {True: "running", False: "gone", None: "?"}
_STYLES = {"healthy": "green", "running": "green", "unhealthy": "red", "gone": "red", "not listed": "dim"}


def _worker_columns() -> tuple[Column, ...]:
    from sandserve.cli.tables import Column

    return (
        Column("worker", keep=True),
        Column("url", drop_order=6),
        Column("gateway sees", style=_STYLES.get),
        Column("server", style=_STYLES.get),
        Column("running", number=True, drop_order=3),
        Column("queued", number=True, drop_order=4),
        Column("cache hits", number=True, drop_order=2),
        Column("boot", drop_order=5),
        Column("gateway id", drop_order=1),
    )


@fleet.command("bench")
@click.option("--policies", default="cache_aware,round_robin,random", show_default=True, metavar="P1,P2")
@click.option(
    "--gateways",
    default="sglang-router",
    show_default=True,
    metavar="G1,G2",
    help="sglang-router and/or smg.",
)
@click.option("--provider", type=click.Choice(["local", "daytona"]), help="Where the workers run.")
@click.option("--model", metavar="PRESET|HF_ID|PATH", help="What every worker serves.")
@click.option("--workers", "-n", type=int, default=2, show_default=True)
@click.option("--documents", type=int, default=8, show_default=True)
@click.option("--words", type=int, default=500, show_default=True, help="Words per document.")
@click.option("--questions", type=int, default=4, show_default=True, help="Questions per document.")
@click.option("--in-flight", type=int, default=4, show_default=True)
@click.option("--max-tokens", type=int, default=8, show_default=True)
@click.option("--repeats", type=int, default=1, show_default=True, help="Fresh fleets per policy.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def fleet_bench(
    policies: str,
    gateways: str,
    provider: str | None,
    model: str | None,
    workers: int,
    documents: int,
    words: int,
    questions: int,
    in_flight: int,
    max_tokens: int,
    repeats: int,
    seed: int,
    as_json: bool,
) -> None:
    """The same traffic through fresh fleets under each routing policy: cached share (against the ideal for
    the traffic) and latency (time to first token, end to end), side by side."""
    from sandserve.cli.bench_view import LevelProgressView
    from sandserve.cli.console import err
    from sandserve.cli.fleet_view import print_bench
    from sandserve.fleet.routing_bench import compare_policies, make_traffic, median
    from sandserve.observe.bench_results import LevelProgress
    from sandserve.serve.resolve import resolve_spec

    spec = resolve_spec(model, provider=provider, auth="key")
    traffic = make_traffic(documents, words, questions, seed)
    err.print(
        f"{traffic.description}, {in_flight} in flight, {workers} workers, {repeats} fresh fleet(s) each"
    )
    labels: dict[int, str] = {}  # one progress line per fleet brought up

    def progress(run: Any) -> None:
        if id(run) not in labels:
            label = f"{run.gateway} {run.policy}"
            repeat = 1 + sum(1 for seen in labels.values() if seen.startswith(label + " "))
            labels[id(run)] = f"{label} #{repeat}" if repeats > 1 else label
        ttft = median(run.ttft_s)
        view.update(
            LevelProgress(
                label=labels[id(run)],
                done=len(run.ttft_s) + run.failed,
                total=run.requests,
                failed=run.failed,
                elapsed_s=0.0,
                ttft_p50_ms=None if ttft is None else ttft * 1000,
            )
        )

    with sigterm_as_interrupt(), LevelProgressView() as view:
        runs, ideal = compare_policies(
            spec,
            [policy.strip() for policy in policies.split(",") if policy.strip()],
            traffic,
            repeats=repeats,
            gateways=[gateway.strip() for gateway in gateways.split(",") if gateway.strip()],
            workers=workers,
            in_flight=in_flight,
            max_tokens=max_tokens,
            on_progress=progress,
        )
    print_bench(runs, ideal, as_json)


@fleet.command("down")
@click.argument("fleet_id", required=False)
@reports_errors
def fleet_down(fleet_id: str | None) -> None:
    """Stop the autoscaler and the gateway and take every worker down (default: the one fleet up)."""
    from sandserve.cli.console import err
    from sandserve.fleet import fleet_down as take_down

    err.print(f"[green]down[/] {take_down(fleet_id)} (autoscaler, gateway and workers)")


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
