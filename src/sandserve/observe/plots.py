"""The benchmark's plots (matplotlib, no display): latency against throughput, TTFT and ITL percentiles per
level, and the goodput curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandserve.observe.bench_results import BenchResult, LevelResult


def _measured(result: BenchResult) -> list[LevelResult]:
    return [level for level in result.levels if level.metrics is not None and level.metrics.completed]


def _gaps(values: list[float | None]) -> list[float]:
    """None (nothing measured) as a gap in the line."""
    return [float("nan") if v is None else v for v in values]


def draw_plots(result: BenchResult, directory: Path) -> list[Path]:
    levels = _measured(result)
    if not levels:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [level.label.split("=", 1)[1] for level in levels]
    axis_name = "concurrency" if levels[0].mode == "concurrency" else "request rate (req/s)"
    metrics = [level.metrics for level in levels]
    written = []

    def save(fig: Any, name: str) -> None:
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    throughput = [m.output_token_throughput for m in metrics if m]
    for name, series in (
        ("TTFT p50", [m.ttft.median for m in metrics if m]),
        ("E2E p50", [m.e2e.median for m in metrics if m]),
        ("E2E p99", [m.e2e.p99 for m in metrics if m]),
    ):
        ax.plot(throughput, _gaps(series), marker="o", label=name)
    for x, y, label in zip(throughput, [m.e2e.median for m in metrics if m], labels, strict=True):
        if y is not None:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency vs throughput")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "latency_vs_throughput.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    for ax, key, title in ((left, "ttft", "TTFT"), (right, "itl", "ITL")):
        for pct in ("median", "p90", "p99"):
            values = _gaps([getattr(getattr(m, key), pct) for m in metrics if m])
            ax.plot(labels, values, marker="o", label=pct)
        ax.set_xlabel(axis_name)
        ax.set_ylabel("ms")
        ax.set_title(f"{title} percentiles per level")
        ax.legend()
        ax.grid(alpha=0.3)
    save(fig, "ttft_itl_percentiles.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(labels, [m.request_throughput for m in metrics if m], marker="o", label="requests/s")
    if any(m and m.goodput is not None for m in metrics):
        ax.plot(labels, _gaps([m.goodput for m in metrics if m]), marker="o", label="goodput (met every SLO)")
    ax.set_xlabel(axis_name)
    ax.set_ylabel("requests/s")
    ax.set_title("Goodput" if any(m and m.goodput is not None for m in metrics) else "Request throughput")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, "goodput.png")
    return written
