"""A benchmark's files: bench.json (everything, per request too), report.md, and the plots."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sandserve.errors import ConfigError
from sandserve.observe.bench_results import BenchResult, LevelResult

DEFINITIONS = """\
## How these are measured

Client: sandserve's streaming aiohttp client (`stream_options.include_usage`); token counts are the
server's own `usage`, never a local tokenizer. Definitions follow SGLang's `bench_serving` and vLLM's
`bench serve`:

- **TTFT**: request sent -> first chunk carrying text (reasoning text counts, as in vLLM's chat backend).
- **ITL**: gaps between successive text chunks (a chunk carrying several tokens is one gap, in both).
- **TPOT**: (E2E - TTFT) / (output tokens - 1), requests with more than one output token.
- **E2E**: request sent -> end of the stream.
- **Throughput**: completed requests and their tokens over the level's duration (first send -> last finish).
- **Goodput**: completed requests meeting every SLO given (`<=`), per second (vLLM `--goodput`,
  SGLang `ttft/tpot/e2el`). **SLO attainment**: good / sent (a failed request misses).
- **Concurrency**: sum of E2E / duration (SGLang's figure: mean requests in flight).
- Percentiles: linear interpolation (numpy), as both do. vLLM prints only p99 by default.
- Where they differ: SGLang's OpenAI-compatible backends retokenise the received text to count output
  tokens (can differ from the server's usage by a few tokens); vLLM uses the server's usage when it is sent.
  Both send all requests at once unless a rate or max concurrency is set; a rate means Poisson arrivals.
  SGLang opens a new HTTP session per request; sandserve keeps connections alive (less client CPU) and
  sends a request once more if its pooled connection proves closed before any answer (counted per level).
- **Server load** (queue depth, running, KV/token usage, cache hit rate) is sampled from the server's own
  `/v1/loads`, `/slots` and `/metrics` during each level; cache hit rate = cached / prompt tokens over the
  level (server counters).
"""


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def level_row(level: LevelResult) -> dict[str, str]:
    """One level's figures as display strings (shared by the console table and the report)."""
    m, load = level.metrics, level.load
    row = {"level": level.label + (" (interrupted)" if level.interrupted else "")}
    if m is None:
        return row
    row.update(
        {
            "done": f"{m.completed}/{m.sent}",
            "req/s": _fmt(m.request_throughput, 2),
            "out tok/s": _fmt(m.output_token_throughput, 0),
            "TTFT p50/p90/p99 ms": f"{_fmt(m.ttft.median)} / {_fmt(m.ttft.p90)} / {_fmt(m.ttft.p99)}",
            "TPOT mean ms": _fmt(m.tpot.mean, 2),
            "ITL p50/p99 ms": f"{_fmt(m.itl.median, 2)} / {_fmt(m.itl.p99, 2)}",
            "E2E p50/p99 ms": f"{_fmt(m.e2e.median, 0)} / {_fmt(m.e2e.p99, 0)}",
            "goodput req/s": "-" if m.goodput is None else f"{m.goodput:.2f} ({_pct(m.slo_attainment)})",
            "queue mean/max": "-"
            if load is None or load.queued_mean is None
            else f"{load.queued_mean:.1f} / {load.queued_max}",
            "running mean": "-" if load is None else _fmt(load.running_mean),
            "KV max": "-" if load is None else _pct(load.token_usage_max),
            "cache hit": "-" if load is None else _pct(load.cache_hit_rate),
            "client CPU": _pct(level.client_cpu),
        }
    )
    return row


def markdown(result: BenchResult, plots: list[str]) -> str:
    ep = result.endpoint
    lines = [
        f"# Serving benchmark: {ep['model']} ({ep['engine']} on {ep['provider']})",
        "",
        f"- Endpoint: `{ep['id']}` {ep['url']} (auth: {ep['auth']})",
        f"- Dataset: {result.dataset}",
        f"- Load: {result.config['mode']} {result.config['levels'] or '(sweep to saturation)'}; "
        f"warm-up {result.config['warmup']} requests",
    ]
    slo = {k: v for k, v in result.config["slo"].items() if v is not None}
    if slo:
        lines.append("- SLO: " + ", ".join(f"{k.replace('_ms', '')} <= {v:g} ms" for k, v in slo.items()))
    if result.interrupted:
        lines.append("- **Interrupted**: the figures below are what was measured before Ctrl-C.")
    if result.server_gone:
        gone = result.server_gone.describe()
        lines.append(f"- **Stopped**: {gone}; no level after it was run.")
    rows = [level_row(level) for level in result.levels]
    if rows:
        headers = max((list(row) for row in rows), key=len)
        lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row.get(h, "-") for h in headers) + " |" for row in rows]
    notes = [f"- {level.label}: {w}" for level in result.levels for w in level.warnings]
    notes += [f"- {w}" for w in result.warnings]
    errors = [
        f"- {level.label}: {count} x {message}"
        for level in result.levels
        if level.metrics
        for message, count in level.metrics.errors.items()
    ]
    if notes:
        lines += ["", "## Notes", *notes]
    if errors:
        lines += ["", "## Failed requests", *errors]
    if plots:
        lines += ["", "## Plots", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    lines += ["", DEFINITIONS]
    return "\n".join(lines)


def write_report(result: BenchResult, directory: str | Path) -> dict[str, Path]:
    """bench.json, report.md and the plots in ``directory``; the paths written, by kind."""
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the benchmark report to {out}: {exc.strerror or exc}.",
            hint="Pick an --output directory you can write to.",
        ) from exc
    written: dict[str, Path] = {}
    data: dict[str, Any] = result.to_dict()
    _write_atomically(out / "bench.json", json.dumps(data, indent=1, default=str) + "\n")
    written["json"] = out / "bench.json"
    from sandserve.observe.plots import draw_plots

    plots = draw_plots(result, out)
    for path in plots:
        written[path.stem] = path
    _write_atomically(out / "report.md", markdown(result, [str(p) for p in plots]))
    written["report"] = out / "report.md"
    return written
