"""Every verb that prints rows, drawn with realistic data at 80 and at 120 columns: no header, id or name cut,
one line per row, and the caption naming exactly the columns left out; into a pipe, tab-separated lines under
a header line with every value whole."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import pytest
from click.testing import CliRunner
from rich.console import Console

from sandserve.batch import BatchSummary
from sandserve.cli.batch_view import SUMMARY_COLUMNS, summary_cells
from sandserve.cli.bench_view import LEVEL_COLUMNS, level_cells
from sandserve.cli.fleet import _worker_columns
from sandserve.cli.fleet_view import BENCH_COLUMNS, bench_cells, bench_rows
from sandserve.cli.listing import ENDPOINT_COLUMNS, PRESET_COLUMNS, preset_row
from sandserve.cli.numbers import short_number
from sandserve.cli.tables import Cell, Column, render_table, tab_separated
from sandserve.cli.top_view import TOP_COLUMNS, top_rows, top_screen
from sandserve.cli.use import tour_columns
from sandserve.fleet.routing_bench import PolicyRun
from sandserve.observe.bench_results import LevelLoad, LevelResult
from sandserve.observe.metrics import RequestRecord, level_metrics
from sandserve.observe.top import TopRow, TopSnapshot
from sandserve.presets import PRESETS

FLEET = "fleet-tiny-random-llama-3f9a"
WORKERS = ["tiny-random-llama-w0-9f8e7d", "tiny-random-llama-w1-0a1b2c", "tiny-random-llama-w2-77d0e1"]
SCALER = "scaler-tiny-random-llama-3f9a-c0de"


def drawn(renderable: object, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=True)
    console.print(renderable, soft_wrap=False)
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def endpoint_rows() -> list[list[Cell]]:
    return [
        [
            "smollm2-135m-3d81f2",
            "ready",
            "local",
            "llamacpp",
            "smollm2-135m",
            "http://127.0.0.1:41873",
            "12m",
        ],
        [
            "gpt-oss-20b-a8c0e4",
            "booting",
            "daytona",
            "sglang",
            "openai/gpt-oss-20b",
            "https://8000-5c2d1a9e-8b7f-4c3e-9d1a-2f6e8b7c4d3a.proxy.daytona.works",
            "2m",
        ],
    ]


def top_snapshot() -> TopSnapshot:
    def row(id: str, role: str, **values: object) -> TopRow:
        base: dict[str, object] = dict(
            id=id,
            role=role,
            fleet=FLEET if role != "endpoint" else None,
            model="tiny-random-llama",
            engine="llamacpp",
            provider="local",
            state="ready",
            ok=True,
            error=None,
            running=None,
            queued=None,
            token_usage=None,
            cache_hit_rate=None,
            prompt_tokens_per_s=None,
            generation_tokens_per_s=None,
            requests_per_s=None,
            failed_readings=0,
            age_s=754.0,
        )
        base.update(values)
        return TopRow(**base)  # type: ignore[arg-type]

    busy = dict(running=4, queued=7, token_usage=0.62, cache_hit_rate=0.81, prompt_tokens_per_s=12874.0)
    return TopSnapshot(
        at=1_765_000_000.0,
        rows=[
            row("smollm2-135m-3d81f2", "endpoint", running=1, queued=0, generation_tokens_per_s=41.5),
            row(FLEET, "gateway", workers_healthy="2/2", running=8, requests_per_s=3.2, error_responses=0),
            row(SCALER, "autoscaler", ok=True, note="up 4s ago: 14 request(s) queued on 2 worker(s) for 3 s"),
            row(WORKERS[0], "worker", **busy, generation_tokens_per_s=1520.4, gateway_healthy=True),
            row(WORKERS[1], "worker", **busy, generation_tokens_per_s=1311.0, gateway_healthy=True),
            row(WORKERS[2], "worker", state="booting", ok=False),
        ],
    )


def bench_levels() -> list[LevelResult]:
    levels = []
    for concurrency in (1, 4, 16, 64):
        records = []
        for index in range(24):
            sent = index * 0.5
            record = RequestRecord(index=index, sent_at=sent, ok=True)
            record.chunk_times = [sent + 0.35 + 0.02 * step for step in range(128)]
            record.done_at = record.chunk_times[-1]
            record.prompt_tokens, record.completion_tokens, record.cached_tokens = 260, 128, 0
            records.append(record)
        level = LevelResult("concurrency", concurrency, records=records, client_cpu=0.12)
        level.metrics = level_metrics(records)
        level.load = LevelLoad(
            samples=40, running_mean=3.6, queued_mean=1.2, queued_max=9, token_usage_max=0.4
        )
        level.load.cache_hit_rate = 0.02
        levels.append(level)
    levels[-1].interrupted = True
    return levels


def batch_summary() -> BatchSummary:
    return BatchSummary(
        requests=147,
        succeeded=141,
        failed=6,
        skipped=53,
        retries=9,
        wall_s=312.4,
        requests_per_s=0.47,
        input_tokens=81234,
        output_tokens=18816,
        cached_tokens=40120,
        input_tokens_per_s=260.0,
        output_tokens_per_s=60.2,
        cached_share=0.49,
        latency_p50_s=8.21,
        latency_p90_s=14.9,
        latency_p99_s=21.33,
        errors_by_kind={"invalid_request_error": 6},
        concurrency=4,
        order="input",
    )


def fleet_bench_cells() -> list[list[Cell]]:
    runs = []
    for policy, share in (("cache_aware", 0.61), ("round_robin", 0.33), ("random", 0.29)):
        run = PolicyRun(policy=policy, gateway="sglang-router", requests=32, prompt_tokens=1000)
        run.cached_tokens = int(share * 1000)
        run.ttft_s = [0.41, 0.52, 0.77, 1.9]
        run.e2e_s = [1.2, 1.4, 2.2, 3.9]
        run.wall_s = 38.2
        runs.append(run)
    return [bench_cells(row) for row in bench_rows(runs, 0.66)]


def fleet_status_cells() -> list[list[Cell]]:
    return [
        [
            worker,
            f"http://127.0.0.1:4{n}873",
            "healthy",
            "running",
            2,
            0,
            "75%",
            "cold 4.2 s",
            f"http://127.0.0.1:4{n}873",
        ]
        for n, worker in enumerate(WORKERS)
    ]


TOUR_ROWS: list[list[Cell]] = [
    ["chat completion", "passed", "answered in 0.41 s, 12 prompt + 16 completion tokens"],
    ["streaming", "passed", "first token after 0.09 s, 16 chunks"],
    ["reasoning split", "not available", "not available on this model (no reasoning parser)"],
    ["tool calling loop", "failed", "the model answered with text instead of calling get_weather"],
    ["JSON schema", "passed", '{"author": "Austen"} matched the schema'],
    ["prefix cache", "passed", "attempt 2: 0.05s, 96/112 prompt tokens from cache"],
]


#: (verb, columns, rows, the values of each row that must be whole, how the verb draws them)
VERBS: list[tuple[str, Sequence[Column], list[list[Cell]], int]] = [
    ("ls", ENDPOINT_COLUMNS, endpoint_rows(), 1),
    ("presets", PRESET_COLUMNS, [preset_row(preset) for preset in PRESETS], 2),
    ("top --once", TOP_COLUMNS, top_rows(top_snapshot().rows, tree=True), 1),
    ("bench", LEVEL_COLUMNS, [level_cells(level) for level in bench_levels()], 1),
    ("fleet status", _worker_columns(), fleet_status_cells(), 1),
    ("fleet bench", BENCH_COLUMNS, fleet_bench_cells(), 2),
    ("batch", SUMMARY_COLUMNS, [summary_cells(batch_summary())], 0),
    ("tour", tour_columns(), TOUR_ROWS, 1),
]


def split_header(line: str) -> list[str]:
    return [part for part in re.split(r" {2,}", line.strip()) if part]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize(("verb", "columns", "rows", "names"), VERBS, ids=[verb[0] for verb in VERBS])
def test_every_table_fits_the_terminal(
    verb: str, columns: Sequence[Column], rows: list[list[Cell]], names: int, width: int
) -> None:
    lines = drawn(render_table(columns, rows, width=width, title=f"{verb} table"), width)
    title, header, rule = lines[:3]
    body, caption = lines[3 : 3 + len(rows)], lines[3 + len(rows) :]
    assert title.strip() == f"{verb} table" and set(rule.strip()) == {"─"}
    assert not any(line.startswith("not shown") for line in body), f"{verb}: a row took two lines"
    assert all(len(line.rstrip()) <= width for line in lines)
    # Every header is whole; those missing are exactly the ones the caption names.
    shown = split_header(header)
    headers = [column.header for column in columns]
    assert all(name in headers for name in shown), f"{verb}: a header was cut: {shown}"
    left_out = [name for name in headers if name not in shown]
    if left_out:
        text = " ".join(" ".join(caption).split())
        assert text.startswith("not shown at this width: ") and text.endswith(")")
        assert text.removeprefix("not shown at this width: ").split(" (")[0].split(", ") == left_out
    else:
        assert caption == [], f"{verb}: a row took two lines"
    # Ids and names (the first ``names`` columns) are whole on their row.
    for row, line in zip(rows, body, strict=True):
        for cell in row[:names]:
            assert str(cell) in line, f"{verb}: {cell!r} cut in {line!r}"
        assert "…" not in line.split("  ")[0]


def test_at_80_columns_the_figures_a_person_looks_at_first_are_there() -> None:
    def headers(columns: Sequence[Column], rows: list[list[Cell]]) -> list[str]:
        return split_header(drawn(render_table(columns, rows, width=80), 80)[0])

    assert {"id", "state", "run", "queue", "out tok/s"} <= set(
        headers(TOP_COLUMNS, top_rows(top_snapshot().rows, tree=True))
    )
    bench = headers(LEVEL_COLUMNS, [level_cells(level) for level in bench_levels()])
    assert {"level", "done", "req/s", "out tok/s", "TTFT p50", "TPOT"} <= set(bench)
    summary = headers(SUMMARY_COLUMNS, [summary_cells(batch_summary())])
    assert {"requests", "ok", "failed", "left", "req/s", "out tok/s", "p50"} <= set(summary)
    assert set(headers(BENCH_COLUMNS, fleet_bench_cells())) >= {"gateway", "policy", "cached", "TTFT50"}


def test_top_draws_a_fleet_under_its_gateway_with_the_autoscaler_as_its_own_line() -> None:
    lines = drawn(top_screen(top_snapshot(), width=120, interval=1.0), 120)
    assert lines[0].startswith("sandserve top") and "q or Ctrl-C: quit" in lines[0]
    assert "1 endpoint, 1 fleet (3 workers)" in lines[0]
    assert f"├ {SCALER}  autoscaler  ready" in next(line for line in lines if SCALER in line)
    assert lines[-1] == f"{FLEET} autoscaler: up 4s ago: 14 request(s) queued on 2 worker(s) for 3 s"
    at_80 = drawn(top_screen(top_snapshot(), width=80, interval=1.0), 80)
    assert at_80[-1].startswith(f"{FLEET} autoscaler: up 4s ago: 14") and len(at_80[-1]) == 80
    assert f"└ {WORKERS[2]}" in next(line for line in lines if WORKERS[2] in line)
    worker = next(line for line in lines if WORKERS[0] in line)
    assert "1.5k" in worker and "13k" in worker and "62%" in worker  # short forms


@pytest.mark.parametrize(("verb", "columns", "rows", "names"), VERBS, ids=[verb[0] for verb in VERBS])
def test_into_a_pipe_every_table_is_a_header_line_and_whole_tab_separated_rows(
    verb: str, columns: Sequence[Column], rows: list[list[Cell]], names: int
) -> None:
    header, *lines = tab_separated(columns, rows).splitlines()
    assert header.split("\t") == [column.header for column in columns]
    assert len(lines) == len(rows)
    for row, line in zip(rows, lines, strict=True):
        fields = line.split("\t")
        assert len(fields) == len(columns) and "…" not in line and "\x1b" not in line
        assert fields[:names] == [str(cell) for cell in row[:names]]


def test_top_once_into_a_pipe_prints_plain_ids_with_their_role() -> None:
    header, *lines = tab_separated(TOP_COLUMNS, top_rows(top_snapshot().rows, tree=False)).splitlines()
    rows = [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]
    assert [(row["id"], row["role"]) for row in rows] == [
        ("smollm2-135m-3d81f2", "endpoint"),
        (FLEET, "gateway"),
        (SCALER, "autoscaler"),
        *((worker, "worker") for worker in WORKERS),
    ]
    assert rows[3]["in tok/s"] == "12874" and rows[3]["KV"] == "62%"


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [(0, 0, "0"), (950, 0, "950"), (9.54, 1, "9.5"), (999.96, 1, "1.0k"), (1234, 0, "1.2k"),
     (12874.0, 0, "13k"), (3_400_000, 0, "3.4M"), (0.4712, 2, "0.47")],
)  # fmt: skip
def test_short_number_forms(value: float, digits: int, text: str) -> None:
    assert short_number(value, digits) == text


def test_the_batch_summary_into_a_pipe_is_a_header_line_and_its_row(tmp_path) -> None:
    import click

    from sandserve.cli.batch_view import show_batch_summary

    command = click.Command(
        "show", callback=lambda: show_batch_summary(batch_summary(), tmp_path / "out.jsonl")
    )
    result = CliRunner().invoke(command, catch_exceptions=False)
    header, row = result.stdout.splitlines()
    assert header.startswith("requests\tok\tfailed\tleft") and row.startswith("147\t141\t6\t0\t53\t")
    assert "batch summary" in result.stderr
