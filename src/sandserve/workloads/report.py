"""The classification run's files: report.json, report.md and the confusion matrix as a PNG.

They are written into a temporary folder that is renamed into place at the end: a run directory either holds
the whole report or does not exist.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sandserve.workloads.classify import ClassificationReport, summary_lines
from sandserve.workloads.corpus import AUTHORS

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion.png"


def write_report(run_dir: Path, report: ClassificationReport) -> list[Path]:
    if run_dir.exists():
        raise FileExistsError(run_dir)
    partial = run_dir.with_name(run_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        (partial / REPORT_JSON).write_text(json.dumps(report.to_dict(), indent=2))
        (partial / REPORT_MD).write_text(markdown(report))
        plot_confusion(report, partial / CONFUSION_PNG)
        os.replace(partial, run_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return [run_dir / REPORT_JSON, run_dir / REPORT_MD, run_dir / CONFUSION_PNG]


def markdown(report: ClassificationReport) -> str:
    first, second = report.author_pass, report.setting_pass
    lines = [
        f"# Classification run: {report.model} ({report.engine})",
        "",
        "```",
        *summary_lines(report),
        "```",
        "",
        f"Accuracy: **{report.correct}/{len(report.truths)} ({100 * report.accuracy:.1f} %)**",
        "",
        "| author | correct | passages | indoors | outdoors |",
        "|---|---:|---:|---:|---:|",
    ]
    settings = report.settings()
    for author, (ok, n) in report.per_author().items():
        lines.append(
            f"| {author} | {ok} | {n} | {settings[author]['indoors']} | {settings[author]['outdoors']} |"
        )
    lines += [
        "",
        "| pass | wall s | input tok | tok/s | M tok/hour | output tok | cached tok | cached share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in (("1 author", first), ("2 setting", second)):
        lines.append(
            f"| {name} | {run.wall_s:.2f} | {run.input_tokens:,} | {run.input_tokens_per_s:,.0f} | "
            f"{run.input_m_tokens_per_hour:.1f} | {run.output_tokens:,} | {run.cached_tokens:,} | "
            f"{100 * run.cached_share:.1f} % |"
        )
    lines += ["", f"Pass 2 speed-up: {report.speedup:.1f}x", "", f"![confusion matrix]({CONFUSION_PNG})", ""]
    return "\n".join(lines)


def plot_confusion(report: ClassificationReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = report.confusion()
    truths = report.authors
    columns = [*AUTHORS, "(none)"]
    values = [[matrix[truth][column] for column in columns] for truth in truths]
    figure, axes = plt.subplots(figsize=(1 + 0.6 * len(columns), 1.5 + 0.5 * len(truths)))
    image = axes.imshow(values, cmap="Blues")
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right")
    axes.set_yticks(range(len(truths)), truths)
    axes.set_xlabel("model's answer")
    axes.set_ylabel("true author")
    axes.set_title(f"{report.model}: {report.correct}/{len(report.truths)} correct")
    for row, counts in enumerate(values):
        for column, count in enumerate(counts):
            if count:
                axes.text(
                    column,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if count > max(map(max, values)) / 2 else "black",
                )
    figure.colorbar(image, ax=axes, shrink=0.7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
