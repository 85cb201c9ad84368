"""Serving verbs: up, ls, status, logs, env, down."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from sandserve.cli._app import main, reports_errors, sigterm_as_interrupt
from sandserve.cli.choosing import chosen_endpoint, endpoint_option
from sandserve.cli.program import runnable
from sandserve.cli.values import CONTEXT_LENGTH, PORT, SECONDS, bind_widening, gpu_options
from sandserve.errors import SandserveError

# --- serving ------------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--provider",
    type=click.Choice(["local", "daytona"]),
    help="Where to serve. Default: daytona when DAYTONA_API_KEY is set (environment, .env.local or .env "
    "in this folder), else local.",
)
@click.option(
    "--model",
    "model",
    metavar="PRESET|HF_ID|PATH",
    help="A preset (`sandserve presets`), any Hugging Face id, or a local .gguf file (llama.cpp models, a "
    ".gguf among them, serve with --provider local only).",
)
@click.option("--engine", type=click.Choice(["sglang", "llamacpp"]), help="Override the preset's engine.")
@click.option("--served-name", help="The model name clients send (default: from the preset).")
@click.option(
    "--auth",
    type=click.Choice(["token", "signed", "key", "public"]),
    default=None,
    help="token: preview-token header (default); signed: a signed URL; key: public URL + SGLang "
    "API key; public: no auth at all.",
)
@click.option("--port", type=PORT, help="Server port (local: default a free one; Daytona: 8000).")
@gpu_options
@click.option(
    "--image",
    help="Container image for the sandbox (default: SGLang's own for the GPU's vendor: CUDA or ROCm).",
)
@click.option("--target", help="Daytona region (default: DAYTONA_TARGET, else us-east-1, the GPU region).")
@click.option(
    "--ttl",
    "ttl_minutes",
    type=click.IntRange(min=0),
    metavar="MINUTES",
    help="Daytona deletes the sandbox this long after creation, whatever it is doing (default 240 for a GPU "
    "sandbox; 0: no limit).",
)
@click.option(
    "--auto-stop",
    "auto_stop_minutes",
    type=click.IntRange(min=0),
    metavar="MINUTES",
    help="Daytona stops the sandbox after this many idle minutes (default 0: never). The sandbox is "
    "ephemeral, so a stop deletes it. sandserve's own health checks never count as activity.",
)
@click.option("--spot", is_flag=True, help="A spot GPU: cheaper, and may be taken back without notice.")
@click.option("--yes", "-y", is_flag=True, help="Create a paid GPU sandbox without asking first.")
@click.option("--force", is_flag=True, help="Boot even a spec that failed to boot several times in a row.")
@click.option(
    "--new",
    "another",
    is_flag=True,
    help="Start a new endpoint even when one serving the same spec is up (by default that one is handed "
    "back).",
)
@click.option("--reasoning-parser", help="SGLang reasoning parser (`auto`, `none`, or a name).")
@click.option("--tool-call-parser", help="SGLang tool-call parser (`auto`, `none`, or a name).")
@click.option("--context-length", type=CONTEXT_LENGTH, help="Context window the server allocates for.")
@click.option(
    "--engine-arg",
    "engine_args",
    multiple=True,
    metavar="ARG",
    help="Extra flag for the engine's command line (repeat). Simpler: put engine flags after --, "
    "e.g. `sandserve up -- --mem-fraction-static 0.9`.",
)
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE", help="Environment for the server.")
@click.option("--boot-timeout", type=SECONDS, help="Seconds to wait for a real generation (default 900).")
@click.option("--create-timeout", type=SECONDS, help="Seconds to wait for the sandbox (default 600).")
@click.option(
    "--signed-ttl",
    type=click.IntRange(1, 7 * 86_400),
    help="Lifetime of a signed URL in seconds (default 3600).",
)
@click.option(
    "--cache-volume",
    metavar="NAME",
    help="Daytona volume for the Hugging Face cache: the second boot skips the download.",
)
@click.option("--hf-token-secret", metavar="NAME", help="Pass HF_TOKEN as this Daytona secret, not as text.")
@click.option("--delete-on-failure", is_flag=True, help="Delete the sandbox when boot fails (default: keep).")
@click.option(
    "--no-snapshot",
    is_flag=True,
    help="Boot from the image even if this spec has a golden snapshot, and capture none at `down`.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and create nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint (or the plan) as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Do not echo the server's start-up log.")
@click.argument("engine_flags", nargs=-1, type=click.UNPROCESSED, metavar="[-- ENGINE FLAGS...]")
@reports_errors
def up(
    provider: str | None,
    model: str | None,
    engine: str | None,
    served_name: str | None,
    auth: str | None,
    port: int | None,
    gpus: tuple[str, ...],
    gpu_count: int | None,
    image: str | None,
    target: str | None,
    ttl_minutes: int | None,
    auto_stop_minutes: int | None,
    spot: bool,
    yes: bool,
    force: bool,
    another: bool,
    reasoning_parser: str | None,
    tool_call_parser: str | None,
    context_length: int | None,
    engine_args: tuple[str, ...],
    env_pairs: tuple[str, ...],
    boot_timeout: float | None,
    create_timeout: float | None,
    signed_ttl: int | None,
    cache_volume: str | None,
    hf_token_secret: str | None,
    delete_on_failure: bool,
    no_snapshot: bool,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    engine_flags: tuple[str, ...],
) -> None:
    """Bring a model up and print how to reach it. Engine flags go after `--`, passed as they are:
    `sandserve up --model gpt-oss-20b -- --mem-fraction-static 0.9`.

    Progress and the server's log go to stderr; stdout gets only the export lines (or JSON), so
    `eval "$(sandserve up)"` sets ENDPOINT (and TOKEN) in your shell. A paid GPU sandbox is created only
    after a yes (asked on a terminal, or --yes).
    """
    from sandserve.serve.resolve import resolve_spec

    if engine_flags and "--" not in sys.argv:
        raise click.UsageError(
            runnable(
                f"Unexpected {' '.join(engine_flags)!r}: engine flags go after --, "
                f"e.g. `sandserve up -- {engine_flags[0]}`."
            )
        )
    env = _parse_env(env_pairs)
    _check_bind((*engine_args, *engine_flags), provider, auth)
    spec = resolve_spec(
        model,
        provider=provider,
        engine=engine,
        served_name=served_name,
        auth=auth,
        port=port,
        context_length=context_length,
        boot_timeout=boot_timeout,
        delete_on_failure=delete_on_failure,
        gpus=gpus or None,
        gpu_count=gpu_count,
        spot=spot,
        image=image,
        reasoning_parser=reasoning_parser,
        tool_call_parser=tool_call_parser,
        extra_args=(*engine_args, *engine_flags),
        env=env,
        target=target,
        ttl_minutes=ttl_minutes,
        auto_stop_minutes=auto_stop_minutes,
        create_timeout=create_timeout,
        signed_url_ttl=signed_ttl,
        cache_volume=cache_volume,
        hf_token_secret=hf_token_secret,
        warm_boot=not no_snapshot,
    )
    if dry_run:
        from sandserve.serve.plan import plan

        _print_plan(plan(spec), as_json)
        return

    from sandserve.cli.console import err
    from sandserve.cli.guard import GuardedBootEvents
    from sandserve.serve import lifecycle
    from sandserve.serve.twins import running_twin

    twin = None if another else running_twin(spec)
    if twin is not None and twin.endpoint is not None:
        endpoint = twin.endpoint
        err.print(
            f"[bold]already up[/]: {endpoint.id} serves this same spec ({endpoint.model} at {endpoint.url}); "
            "here are its exports. --new starts a second one."
        )
    else:
        with sigterm_as_interrupt():
            events = GuardedBootEvents(yes=yes, show_log=not quiet)
            endpoint = lifecycle.up(spec, events=events, force=force)
    if as_json:
        click.echo(json.dumps(_endpoint_json(endpoint), indent=2))
    else:
        from sandserve.cli.handoff import handoff_lines

        for line in endpoint.export_lines():
            click.echo(line)
        settings = spec.provider_settings
        ttl = settings.ttl_minutes if spec.uses_gpu else None
        lines = handoff_lines(
            endpoint, ttl_minutes=ttl, auto_stop_minutes=settings.auto_stop_minutes, booted=twin is None
        )
        for line in lines:
            err.print(line)


def _print_wrapped(text: str) -> None:
    from sandserve.cli.console import err
    from sandserve.cli.receipts import wrapped

    for line in wrapped(text, width=max(40, min(err.width, 100))):
        err.print(line, markup=False, highlight=False)


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{_shown_pair(pair)!r} is not NAME=VALUE", param_hint="--env")
        if not name.replace("_", "a").isalnum() or name[0].isdigit() or not name.isascii():
            raise click.BadParameter(f"{name!r} is not a valid variable name", param_hint="--env")
        env[name] = value
    return env


def _shown_pair(pair: str) -> str:
    from sandserve.masking import mask_env

    name, _, value = pair.partition("=")
    return f"{name}={mask_env({name: value})[name]}" if value else pair


def _check_bind(engine_args: tuple[str, ...], provider: str | None, auth: str | None) -> None:
    """A local server with no key must listen on loopback only: refuse an engine flag that widens it."""
    from sandserve.providers import get_provider
    from sandserve.spec import default_provider

    # No provider's proxy in front of it: its own bind address is all that keeps it private.
    local = not get_provider(provider or default_provider()).remote
    address = bind_widening(engine_args)
    if local and address is not None and auth != "key":
        raise click.BadParameter(
            f"--engine-arg would make the local server listen on {address}, reachable from other machines, "
            "with no API key. Use --auth key to require one, or leave the host flag out (127.0.0.1).",
            param_hint="--engine-arg",
        )


def _endpoint_json(endpoint: Any) -> dict[str, Any]:
    """The endpoint as JSON: ``endpoint`` is the URL to export as ENDPOINT, ``base_url`` the OpenAI one."""
    return {"endpoint": endpoint.url, "base_url": endpoint.base_url, **endpoint.to_dict()}


def _print_plan(plan: dict[str, Any], as_json: bool) -> None:
    from sandserve.cli.shown import masked_plan

    plan = masked_plan(plan)
    if as_json:
        click.echo(json.dumps(plan, indent=2))
        return
    from sandserve.cli.guard import print_plan

    print_plan(plan)


_SHOW_SECRETS = click.option(
    "--show-secrets", is_flag=True, help="Show API keys, tokens and signed URLs in clear (masked by default)."
)


@main.command("ls")
@click.option("--all", "include_down", is_flag=True, help="Include endpoints already taken down.")
@click.option("--json", "as_json", is_flag=True)
@_SHOW_SECRETS
@reports_errors
def ls(include_down: bool, as_json: bool, show_secrets: bool) -> None:
    """List the endpoints in the ledger, with whether their server still runs."""
    from sandserve.serve.ledger import Registry
    from sandserve.serve.liveness import refresh

    registry = Registry()
    records = [refresh(record, registry) for record in registry.list(include_down=include_down)]
    if as_json:
        click.echo(json.dumps([_record_json(r, show_secrets) for r in records], indent=2))
        return
    if not records:
        click.echo(runnable("no endpoints (start one with `sandserve up`)"), err=True)
        return
    from sandserve.cli.listing import show_endpoints

    show_endpoints(records, show_secrets=show_secrets)


def _record_json(record: Any, show_secrets: bool = False) -> dict[str, Any]:
    from sandserve.cli.shown import shown_text, shown_url
    from sandserve.config import gpu_hour_price
    from sandserve.serve.spend import cost_so_far

    price = gpu_hour_price()
    return {
        "age_seconds": round(time.time() - record.created_at, 1),
        "cost_so_far": round(cost_so_far(record, price) or 0.0, 4) if price else None,
        "id": record.id,
        "state": record.shown_state,
        "provider": record.provider,
        "engine": record.engine,
        "model": record.model,
        "sandbox_id": record.sandbox.sandbox_id or None,
        "url": shown_url(record.endpoint, show_secrets=show_secrets),
        "log_path": record.log_path,
        "error": shown_text(record.error, record.endpoint, show_secrets=show_secrets),
        "created_at": record.created_at,
        "live": record.live,
        "degraded": record.degraded,
        "info": record.endpoint.info.to_dict() if record.endpoint else {},
    }


@main.command()
@click.argument("endpoint_id", metavar="[ID]", required=False)
@endpoint_option(default="ledger")
@click.option("--json", "as_json", is_flag=True)
@_SHOW_SECRETS
@reports_errors
def status(endpoint_id: str | None, endpoint_option: str | None, as_json: bool, show_secrets: bool) -> None:
    """Show one endpoint: state, URL, boot timeline, KV pool, capabilities."""
    from sandserve.serve.boots import boot_of
    from sandserve.serve.ledger import Registry
    from sandserve.serve.liveness import refresh

    registry = Registry()
    record = refresh(registry.resolve(chosen_endpoint(endpoint_id, endpoint_option)), registry)
    data = _record_json(record, show_secrets)
    receipt = boot_of(registry, record.id)
    data["boot"] = receipt.to_dict() if receipt else None
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from sandserve.cli.listing import show_status

    show_status(data, gone=record.live is False and record.state.value in ("ready", "booting"))


@main.command()
@click.argument("endpoint_id", metavar="[ID]", required=False)
@endpoint_option(default="ledger")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new log text until Ctrl-C.")
@_SHOW_SECRETS
@reports_errors
def logs(endpoint_id: str | None, endpoint_option: str | None, follow: bool, show_secrets: bool) -> None:
    """Print an endpoint's server log (keys and tokens in it masked)."""
    from sandserve.cli.shown import shown_text
    from sandserve.serve.ledger import Registry
    from sandserve.serve.lifecycle import read_log

    record = Registry().resolve(chosen_endpoint(endpoint_id, endpoint_option))
    shown = 0
    while True:
        text = read_log(record)
        sys.stdout.write(shown_text(text[shown:], record.endpoint, show_secrets=show_secrets) or "")
        sys.stdout.flush()
        shown = len(text)
        if not follow:
            return
        time.sleep(1.0)


@main.command("env")
@click.argument("endpoint_id", metavar="[ID]", required=False)
@endpoint_option(default="ledger")
@click.option(
    "--for",
    "client",
    type=click.Choice(["claude-code", "codex", "openai", "anthropic", "litellm"]),
    help="What that client or agent tool needs instead (its variables; config lines as comments).",
)
@reports_errors
def env_(endpoint_id: str | None, endpoint_option: str | None, client: str | None) -> None:
    """Print the export lines for an endpoint again (eval "$(sandserve env)")."""
    from sandserve.serve.ledger import Registry

    record = Registry().resolve(chosen_endpoint(endpoint_id, endpoint_option))
    if record.endpoint is None:
        raise SandserveError(
            f"{record.id} never became ready ({record.shown_state}).",
            hint=f"`sandserve logs {record.id}` shows why.",
        )
    if client is not None:
        from sandserve.cli.agent_env import check_route_served, client_lines

        check_route_served(record, client)
        for line in client_lines(record.endpoint, client):
            click.echo(line)
        return
    for line in record.endpoint.export_lines():
        click.echo(line)


@main.command()
@click.argument("endpoint_ids", metavar="[ID]...", nargs=-1)
@endpoint_option("endpoint_options", default="many", multiple=True)
@click.option("--all", "everything", is_flag=True, help="Take down every endpoint in the ledger.")
@click.option("--yes", "-y", is_flag=True, help="With --all: do not ask first.")
@click.option("--no-snapshot", is_flag=True, help="Capture no golden snapshot before deleting.")
@reports_errors
def down(
    endpoint_ids: tuple[str, ...],
    endpoint_options: tuple[str, ...],
    everything: bool,
    yes: bool,
    no_snapshot: bool,
) -> None:
    """Stop endpoints and delete their sandboxes. A Daytona endpoint that booted cold has its golden snapshot
    captured first, so the next `up` of its spec boots warm; `sandserve snapshots` lists them."""
    from sandserve.cli.console import err
    from sandserve.serve import lifecycle
    from sandserve.serve.ledger import Registry

    registry = Registry()
    endpoint_ids = (*endpoint_ids, *endpoint_options)
    if everything == bool(endpoint_ids):
        raise click.UsageError("Name the endpoints to take down, or pass --all (not both).")
    records = registry.list() if everything else [registry.resolve(ref) for ref in endpoint_ids]
    if everything and records:
        from sandserve.cli.guard import ask

        for record in records:
            err.print(f"  {record.id}  {record.provider}  {record.model}  {record.shown_state}")
        what = f"Taking down all {len(records)} endpoints above and deleting their sandboxes"
        ask(f"{what}?", what, yes=yes)
    failures = []
    for record in records:
        try:
            lifecycle.down(
                record,
                registry,
                capture=not no_snapshot,
                on_capture=_print_wrapped,
            )
            err.print(f"[green]down[/] {record.id}")
        except SandserveError as exc:
            failures.append(exc)
            err.print(f"[red]could not take down {record.id}:[/] {runnable(exc.message)}")
    if not records:
        err.print("nothing to take down")
    if failures:
        sys.exit(1)
