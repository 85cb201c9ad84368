"""`sandserve snapshots`: the golden snapshots warm boots start from (list, delete)."""

from __future__ import annotations

import click

from sandserve.cli._app import main, reports_errors


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.pass_context
@reports_errors
def snapshots(ctx: click.Context, as_json: bool) -> None:
    """List the golden snapshots that make a spec's next `up` boot warm (one per spec and GPU type).

    A snapshot is captured at `down` after a cold boot; `down --all` never deletes one. Delete one with
    `sandserve snapshots delete NAME`: the next `up` of its spec boots cold and captures it again.
    """
    if ctx.invoked_subcommand is not None:
        return
    from sandserve.cli.tables import Column, show_table
    from sandserve.serve.golden import golden_snapshots
    from sandserve.serve.ledger import Registry

    found = golden_snapshots(Registry())
    if as_json:
        import dataclasses
        import json

        listed = [{"provider": s.provider, "spec": s.spec, **dataclasses.asdict(s.info)} for s in found]
        click.echo(json.dumps(listed, indent=2))
        return
    if not found:
        click.echo("no golden snapshots yet: one is captured at `down` after a cold boot", err=True)
        return
    columns = [
        Column("name", keep=True),
        Column("spec", keep=True),
        Column("size", drop_order=3),
        Column("created", drop_order=2),
        Column("last used", drop_order=1),
        Column("state", keep=True),
    ]
    rows = [
        [
            snapshot.info.name,
            snapshot.spec or "(not captured from this machine)",
            f"{snapshot.info.size_gb:.1f} GB" if snapshot.info.size_gb is not None else "-",
            _day(snapshot.info.created_at),
            _day(snapshot.info.last_used_at) if snapshot.info.last_used_at else "never",
            snapshot.info.state + (f": {snapshot.info.error}" if snapshot.info.error else ""),
        ]
        for snapshot in found
    ]
    show_table(columns, rows)


@snapshots.command("delete")
@click.argument("names", nargs=-1, required=True)
@reports_errors
def delete(names: tuple[str, ...]) -> None:
    """Delete golden snapshots by name (`sandserve snapshots` lists them)."""
    from sandserve.cli.console import err
    from sandserve.serve.golden import delete_golden
    from sandserve.serve.ledger import Registry

    registry = Registry()
    for name in names:
        delete_golden(name, registry)
        err.print(f"[green]deleted[/] {name}")


def _day(stamp: str | None) -> str:
    """An ISO time as `2026-12-07 08:41` (UTC, as the provider reports it)."""
    if not stamp:
        return "-"
    return stamp.replace("T", " ")[:16]
