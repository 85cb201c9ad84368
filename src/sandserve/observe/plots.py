"""The benchmark's plots (matplotlib, no display): latency against throughput, TTFT and ITL percentiles per
level, and the goodput curve.

Read at a glance: every axis starts at 0 (a curve's height is its size, not its spread), the SLOs given to
`bench --slo` are drawn as dashed lines on the plots they bound, and the levels are named with what they are
(concurrency 4, 2 req/s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandserve.observe.bench_results import BenchResult, LevelResult

#: An SLO line is dashed, in the colour of the series it bounds; the legend says which it is.
_SLO_STYLE = {"linestyle": "--", "linewidth": 1.2, "alpha": 0.9}


def _measured(result: BenchResult) -> list[LevelResult]:
    return [level for level in result.levels if level.metrics is not None and level.metrics.completed]


def _gaps(values: list[float | None]) -> list[float]:
    """None (nothing measured) as a gap in the line."""
    return [float("nan") if v is None else v for v in values]


def _slo_ms(result: BenchResult) -> dict[str, float]:
    """The run's objectives in milliseconds, by metric (``ttft``, ``tpot``, ``e2e``); unset ones left out."""
    slo = result.config.get("slo") or {}
    return {key.removesuffix("_ms"): value for key, value in slo.items() if value is not None}


def _slo_line(ax: Any, milliseconds: float, name: str, colour: Any) -> None:
    ax.axhline(milliseconds, label=f"{name} SLO {milliseconds:g} ms", color=colour, **_SLO_STYLE)


def _legend_below(ax: Any) -> None:
    """Below the plot, where it never hides a point."""
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)


def _level_name(level: LevelResult) -> str:
    """What a level is, in words: "concurrency 4", "2 req/s", "all at once"."""
    value = level.label.split("=", 1)[1]
    if level.mode == "rate":
        return "all at once" if value == "inf" else value.replace("/s", " req/s")
    return f"concurrency {value}"


def _from_zero(ax: Any, *, x: bool = False) -> None:
    ax.margins(y=0.08)
    ax.set_ylim(bottom=0)
    if x:
        ax.set_xlim(left=0)


def plot_figures(result: BenchResult) -> dict[str, Any]:
    """The figures by file stem (none when no level completed a request); the caller saves and closes them."""
    levels = _measured(result)
    if not levels:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [level.label.split("=", 1)[1] for level in levels]
    axis_name = (
        "concurrency (requests in flight)" if levels[0].mode == "concurrency" else "request rate (req/s)"
    )
    metrics = [level.metrics for level in levels]
    slo = _slo_ms(result)
    figures: dict[str, Any] = {}

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    throughput = [m.output_token_throughput for m in metrics if m]
    colours: dict[str, Any] = {}
    for name, series in (
        ("TTFT p50", [m.ttft.median for m in metrics if m]),
        ("E2E p50", [m.e2e.median for m in metrics if m]),
        ("E2E p99", [m.e2e.p99 for m in metrics if m]),
    ):
        (line,) = ax.plot(throughput, _gaps(series), marker="o", label=name)
        colours.setdefault(name.split()[0].lower(), line.get_color())
    for x, y, level in zip(throughput, [m.e2e.median for m in metrics if m], levels, strict=True):
        if y is not None:
            ax.annotate(_level_name(level), (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8)
    for key in ("ttft", "e2e"):
        if key in slo:
            _slo_line(ax, slo[key], key.upper(), colours[key])
    ax.set_xlabel("output tokens/s (each point: one load level, named at its E2E p50)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency vs throughput")
    _from_zero(ax, x=True)
    ax.set_xlim(right=max([*throughput, 1.0]) * 1.3)  # room for the level names
    _legend_below(ax)
    ax.grid(alpha=0.3)
    figures["latency_vs_throughput"] = fig

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.6))
    for ax, key, title, bound in ((left, "ttft", "TTFT", "ttft"), (right, "itl", "ITL", "tpot")):
        for pct in ("median", "p90", "p99"):
            values = _gaps([getattr(getattr(m, key), pct) for m in metrics if m])
            ax.plot(labels, values, marker="o", label="p50" if pct == "median" else pct)
        if bound in slo:  # ITL is bounded by the time-per-output-token objective
            _slo_line(ax, slo[bound], bound.upper(), "#c0392b")
        ax.set_xlabel(axis_name)
        ax.set_ylabel("ms")
        ax.set_title(f"{title} percentiles per level")
        _from_zero(ax)
        _legend_below(ax)
        ax.grid(alpha=0.3)
    figures["ttft_itl_percentiles"] = fig

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    with_goodput = any(m and m.goodput is not None for m in metrics)
    ax.plot(labels, [m.request_throughput for m in metrics if m], marker="o", label="requests/s")
    if with_goodput:
        met = ", ".join(f"{key.upper()} <= {value:g} ms" for key, value in slo.items())
        ax.plot(labels, _gaps([m.goodput for m in metrics if m]), marker="o", label=f"goodput ({met})")
    ax.set_xlabel(axis_name)
    ax.set_ylabel("requests/s")
    ax.set_title("Goodput: requests/s that met every SLO" if with_goodput else "Request throughput")
    _from_zero(ax)
    _legend_below(ax)
    ax.grid(alpha=0.3)
    figures["goodput"] = fig
    return figures


def draw_plots(result: BenchResult, directory: Path) -> list[Path]:
    figures = plot_figures(result)  # chooses the display-less backend before pyplot is imported here
    if not figures:
        return []
    import matplotlib.pyplot as plt

    written = []
    for name, fig in figures.items():
        path = directory / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
