"""What a user reads once an endpoint is up: where it is, what it holds, how to come back and how to stop
it."""

from __future__ import annotations

from sandserve.cli.program import program
from sandserve.endpoint import Endpoint
from sandserve.errors import ConfigError


def handoff_lines(
    endpoint: Endpoint, *, ttl_minutes: int | None = None, auto_stop_minutes: int = 0, booted: bool = True
) -> list[str]:
    """``ttl_minutes``: the sandbox's time limit on Daytona (0: none); ``auto_stop_minutes``: its idle stop.
    Both said so the user knows when (and how) it ends. ``booted``: False for an endpoint handed back as it
    was (its KV pool and boot timeline were said when it booted)."""
    prog = program()
    lines = ["", f"[bold green]ready[/]: {endpoint.id} serves [bold]{endpoint.model}[/] at {endpoint.url}"]
    info = endpoint.info
    if booted and info.kv_pool_tokens:
        lines.append(f"  KV pool: {info.kv_pool_tokens:,} tokens (max_total_num_tokens)")
    if booted and info.boot_timeline:
        lines.append(
            "  boot: " + ", ".join(f"{step.phase} {step.seconds:.1f}s" for step in info.boot_timeline)
        )
    remote = _is_remote(endpoint.provider)
    if endpoint.auth == "public" and remote:
        lines.append("[bold red]  warning: this endpoint is PUBLIC: anyone with the URL can use it.[/]")
    if endpoint.auth == "signed" and endpoint.expires_at:
        import time

        minutes = max(0, int((endpoint.expires_at - time.time()) / 60))
        lines.append(f"  the signed URL expires in {minutes} min")
    if endpoint.sandbox_id and remote:
        # A remote sandbox keeps running (and billing) until deleted: say where it is and how to end it.
        lines.append(f"  sandbox left UP: {endpoint.sandbox_id}")
        if ttl_minutes:
            lines.append(
                f"  time limit: Daytona deletes it {ttl_minutes} min after creation (--ttl; 0 for none)"
            )
        elif ttl_minutes == 0:
            lines.append(f"  [yellow]no time limit[/]: it bills until `{prog} down` (--ttl sets one)")
        if auto_stop_minutes:
            lines.append(
                f"  idle stop: after {auto_stop_minutes} min without requests Daytona stops it, and a stop "
                "deletes an ephemeral sandbox (sandserve's own health checks do not count as requests)"
            )
        lines.append(
            f"  reconnect: {endpoint.provider}.get('{endpoint.sandbox_id}')  or  {prog} env {endpoint.id}"
        )
        lines.append(f"  delete:    {prog} down {endpoint.id}")
    else:
        lines.append(f'  again:     eval "$({prog} env {endpoint.id})"')
        lines.append(f"  stop:      {prog} down {endpoint.id}")
    return lines


def _is_remote(provider_name: str) -> bool:
    from sandserve.providers import get_provider

    try:
        return get_provider(provider_name).remote
    except ConfigError:  # an endpoint from the environment: no provider of ours runs it
        return False
