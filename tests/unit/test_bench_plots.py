"""The benchmark's plots read at a glance: axes from 0, the SLOs drawn where they bound, levels named."""

from __future__ import annotations

import random
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from sandserve.observe.bench_results import BenchResult, LevelResult
from sandserve.observe.metrics import RequestRecord, Slo, level_metrics
from sandserve.observe.plots import draw_plots, plot_figures


def records(concurrency: int, count: int = 16) -> list[RequestRecord]:
    """Requests that slow down as more run at once: TTFT about 60 ms x concurrency, 20 ms between tokens."""
    rng = random.Random(concurrency)
    made = []
    for index in range(count):
        sent = index * 0.5
        first = sent + 0.06 * concurrency * rng.uniform(0.8, 1.3)
        chunks = [first + 0.02 * step * rng.uniform(0.9, 1.2) for step in range(32)]
        made.append(
            RequestRecord(
                index, sent, chunks, chunks[-1] + 0.01, prompt_tokens=256, completion_tokens=32, ok=True
            )
        )
    return made


def result(slo: Slo, mode: str = "concurrency", values: tuple[float, ...] = (1, 4, 16)) -> BenchResult:
    levels = [
        LevelResult(mode, value, recs, level_metrics(recs, slo))
        for value in values
        for recs in [records(int(min(value, 64)))]
    ]
    return BenchResult({}, "random", {"slo": slo.to_dict()}, 0.0, levels=levels)


def lines_named(ax, prefix: str) -> list:
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_every_axis_starts_at_zero():
    figures = plot_figures(result(Slo(ttft=0.8, tpot=0.08, e2e=2.0)))
    assert set(figures) == {"latency_vs_throughput", "ttft_itl_percentiles", "goodput"}
    for fig in figures.values():
        for ax in fig.axes:
            assert ax.get_ylim()[0] == 0
    assert figures["latency_vs_throughput"].axes[0].get_xlim()[0] == 0


def test_the_slos_are_drawn_where_they_bound():
    figures = plot_figures(result(Slo(ttft=0.8, tpot=0.08, e2e=2.0)))
    latency = figures["latency_vs_throughput"].axes[0]
    assert [line.get_label() for line in lines_named(latency, "TTFT SLO")] == ["TTFT SLO 800 ms"]
    assert lines_named(latency, "E2E SLO") and lines_named(latency, "E2E SLO")[0].get_ydata()[0] == 2000
    ttft, itl = figures["ttft_itl_percentiles"].axes
    assert lines_named(ttft, "TTFT SLO") and lines_named(itl, "TPOT SLO") and not lines_named(itl, "TTFT")
    goodput = figures["goodput"].axes[0]
    assert "TTFT <= 800 ms" in lines_named(goodput, "goodput")[0].get_label()


def test_without_an_slo_no_line_claims_one():
    figures = plot_figures(result(Slo()))
    for fig in figures.values():
        for ax in fig.axes:
            assert not [line for line in ax.get_lines() if "SLO" in line.get_label()]
    assert figures["goodput"].axes[0].get_title() == "Request throughput"


def test_each_point_is_named_by_its_level():
    figures = plot_figures(result(Slo(), mode="rate", values=(2, 8, float("inf"))))
    names = [text.get_text() for text in figures["latency_vs_throughput"].axes[0].texts]
    assert names == ["2 req/s", "8 req/s", "all at once"]
    figures = plot_figures(result(Slo()))
    names = [text.get_text() for text in figures["latency_vs_throughput"].axes[0].texts]
    assert names == ["concurrency 1", "concurrency 4", "concurrency 16"]


def test_the_plots_are_written(tmp_path: Path):
    written = draw_plots(result(Slo(ttft=0.8)), tmp_path)
    assert sorted(path.name for path in written) == [
        "goodput.png",
        "latency_vs_throughput.png",
        "ttft_itl_percentiles.png",
    ]
    assert all(path.stat().st_size > 10_000 for path in written)
