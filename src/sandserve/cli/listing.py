"""What `ls`, `presets` and `status` print: on a terminal, tables and lines with colour; into a pipe, plain
tab-separated fields (cli/tables.py). An endpoint id and a preset name are always shown whole."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

import click

from sandserve.cli.program import runnable
from sandserve.cli.tables import Column, show_table

STATE_STYLES = {
    "ready": "green", "degraded": "yellow", "booting": "yellow", "failed": "red", "dead": "red", "down": "dim"
}  # fmt: skip

ENDPOINT_COLUMNS = (
    Column("id", keep=True),
    Column("state", style=STATE_STYLES.get),
    Column("provider", drop_order=2),
    Column("engine", drop_order=1),
    Column("model", drop_order=3),
    Column("url", drop_order=4),
    Column("age", drop_order=0),
)

PRESET_COLUMNS = (
    Column("preset", keep=True),
    Column("model", drop_order=4),
    Column("engine", drop_order=3),
    Column("reasoning", drop_order=2),
    Column("tools", drop_order=1),
    Column("gpus/memory", drop_order=1),
    Column("flags / env", drop_order=0),
    Column("note", drop_order=0, cut=True),
)

#: The ledger fields `status` shows, in order (when set).
STATUS_FIELDS = ("provider", "engine", "model", "sandbox_id", "url", "log_path", "error", "degraded")


#: Shown when the user gave a price per GPU hour (SANDSERVE_GPU_HOUR_PRICE).
COST_COLUMN = Column("cost", drop_order=0)


def show_endpoints(records: Iterable[Any], *, show_secrets: bool = False) -> None:
    from sandserve.config import gpu_hour_price

    price = gpu_hour_price()
    columns = (*ENDPOINT_COLUMNS, COST_COLUMN) if price else ENDPOINT_COLUMNS
    rows = [endpoint_row(record, show_secrets=show_secrets, price=price) for record in records]
    show_table(columns, rows)
    if price:
        note = f"cost: GPU hours so far x ${price:g} per GPU hour (SANDSERVE_GPU_HOUR_PRICE)"
        if sys.stdout.isatty():
            from sandserve.cli.styled import styled

            click.echo(styled(note, "dim"))
        else:
            click.echo(note, err=True)


def endpoint_row(record: Any, *, show_secrets: bool = False, price: float | None = None) -> list[str]:
    """An endpoint's row (and its cost so far, given a price per GPU hour); a signed URL's token is masked
    unless ``show_secrets``."""
    from sandserve.cli.shown import shown_url

    row = [
        record.id,
        record.shown_state,
        record.provider,
        record.engine,
        record.model,
        shown_url(record.endpoint, show_secrets=show_secrets) or "-",
        age(record.created_at),
    ]
    if price:
        from sandserve.serve.spend import cost_so_far

        cost = cost_so_far(record, price)
        row.append(f"${cost:,.2f}" if cost is not None else "-")
    return row


def show_presets(presets: Iterable[Any]) -> None:
    show_table(PRESET_COLUMNS, [preset_row(preset) for preset in presets])


def preset_row(preset: Any) -> list[str]:
    from sandserve.serve.fit import GIB, needed_bytes

    flags = " ".join([*preset.extra_args, *(f"{k}={v}" for k, v in preset.env.items())])
    footprint = preset.footprint
    # GPUs it asks for, and memory in all for its weights and KV cache.
    needs = "-"
    if footprint:
        needs = f"{preset.gpu_count} ({needed_bytes(footprint, preset.context_length) / GIB:.0f} GiB)"
    return [
        preset.name,
        preset.model,
        preset.engine,
        preset.reasoning_parser or "-",
        preset.tool_call_parser or "-",
        needs,
        flags or "-",
        preset.note or "-",
    ]


def show_status(data: dict[str, Any], *, gone: bool) -> None:
    """One endpoint, from its `status --json` form; ``gone``: its server no longer runs."""
    if not sys.stdout.isatty():
        _status_fields(data, gone)
        return
    from sandserve.cli.console import out

    out.print(f"[bold]{data['id']}[/]  {styled_state(data['state'])}")
    for key in STATUS_FIELDS:
        if data[key]:
            out.print(f"  {key}: {data[key]}")
    info = data["info"]
    if info.get("kv_pool_tokens"):
        out.print(f"  KV pool: {info['kv_pool_tokens']:,} tokens")
    for step in info.get("boot_timeline", []):
        out.print(f"  {step['seconds']:>7.1f} s  {step['phase']}")
    if data.get("boot"):
        from sandserve.cli.receipts import receipt_lines
        from sandserve.serve.receipt import BootReceipt

        for line in receipt_lines(BootReceipt.from_dict(data["boot"])):
            out.print("  " + line, markup=False, highlight=False)
    if gone:
        out.print(runnable(f"  [red]its server is gone[/]: `sandserve down {data['id']}` clears it"))


def _status_fields(data: dict[str, Any], gone: bool) -> None:
    """`status` into a pipe: one tab-separated ``field value`` line each, nothing cut, no colour."""
    fields: list[tuple[str, Any]] = [("id", data["id"]), ("state", data["state"])]
    fields += [(key, data[key]) for key in STATUS_FIELDS if data[key]]
    info = data["info"]
    if info.get("kv_pool_tokens"):
        fields.append(("kv_pool_tokens", info["kv_pool_tokens"]))
    fields += [(f"phase {step['phase']}", step["seconds"]) for step in info.get("boot_timeline", [])]
    if data.get("boot"):
        boot = data["boot"]
        fields += [("boot", f"{boot['origin']} {boot['total_seconds']} s"), ("boot why", boot["why"])]
        fields += [(f"boot step {step['step']}", step["seconds"]) for step in boot["steps"]]
        fields.append(("boot slowest", boot["slowest"]))
    if gone:
        fields.append(("note", runnable(f"its server is gone: `sandserve down {data['id']}` clears it")))
    for name, value in fields:
        click.echo(f"{name}\t{' '.join(str(value).split())}")


def styled_state(state: str) -> str:
    return f"[{STATE_STYLES[state]}]{state}[/]"


def age(created_at: float) -> str:
    seconds = int(time.time() - created_at)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
