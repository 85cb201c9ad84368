"""The report of ``bench --background``: JSON, Markdown and one plot of the phases side by side."""

from __future__ import annotations

import json
from pathlib import Path

from sandserve.observe.background import BackgroundResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def write_background_report(result: BackgroundResult, output_dir: Path) -> dict[str, Path]:
    """OUTPUT/background.json, OUTPUT/background.md and OUTPUT/background.png; each written whole."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output_dir / "background.json",
        "report": output_dir / "background.md",
        "plot": output_dir / "background.png",
    }
    _write(paths["json"], json.dumps(result.to_dict(), indent=2) + "\n")
    _write(paths["report"], _markdown(result))
    plot_background(result, paths["plot"])
    return paths


def _write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def _markdown(result: BackgroundResult) -> str:
    lines = [
        "# Interactive requests while a batch runs",
        "",
        f"Interactive: {result.interactive_dataset}, {result.plan['requests']} per phase at "
        f"{result.plan['rate']}/s. Batch: {result.batch_dataset}.",
        "",
        "| phase | TTFT p50 ms | TTFT p99 ms | E2E p50 ms | E2E p99 ms | batch tok/s | batch priority |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in result.phases:
        m = phase.interactive
        rate = phase.batch_tokens_per_s
        lines.append(
            f"| {phase.name} | {_ms(m.ttft.median if m else None)} | {_ms(m.ttft.p99 if m else None)} | "
            f"{_ms(m.e2e.median if m else None)} | {_ms(m.e2e.p99 if m else None)} | "
            f"{'-' if rate is None else f'{rate:,.0f}'} | {phase.batch_priority or '-'} |"
        )
    lines += ["", result.headline(), "", "![phases](background.png)", ""]
    return "\n".join(lines)


def plot_background(result: BackgroundResult, path: Path) -> None:
    """Interactive TTFT and E2E p99 per phase (left), the batch's tokens/s per phase (right); axes from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    people = [p for p in result.phases if p.interactive is not None]
    names = [p.name for p in people]
    xs = range(len(people))
    width = 0.38
    ttft = [(p.interactive.ttft.p99 or 0.0) if p.interactive else 0.0 for p in people]
    e2e = [(p.interactive.e2e.p99 or 0.0) if p.interactive else 0.0 for p in people]
    left.bar([x - width / 2 for x in xs], ttft, width, label="TTFT p99")
    left.bar([x + width / 2 for x in xs], e2e, width, label="E2E p99")
    left.set_xticks(list(xs), names)
    left.set_ylabel("ms")
    left.set_ylim(bottom=0)
    left.set_title("interactive requests")
    left.legend()
    batches = [p for p in result.phases if p.batch_priority is not None]
    right.bar([p.name for p in batches], [p.batch_tokens_per_s or 0.0 for p in batches], color="tab:gray")
    right.set_ylabel("tokens/s (prompt + output)")
    right.set_ylim(bottom=0)
    right.set_title("the batch")
    fig.suptitle(result.headline())
    fig.tight_layout()
    partial = path.with_name(path.name + ".partial.png")
    fig.savefig(partial, dpi=110)
    plt.close(fig)
    partial.replace(path)
