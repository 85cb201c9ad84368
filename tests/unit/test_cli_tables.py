"""Tables never cut what a user types back: at 80 columns a terminal shows ids and preset names whole, one
line per row (other columns are left out, and named in a caption), and a pipe gets plain tab-separated fields
under a header line. The verbs run in this process (click's runner: stdout is not a terminal there) on
endpoints the fake pipeline brought up."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from fakes import fake_spec
from rich.console import Console

from sandserve.cli import main
from sandserve.cli.listing import ENDPOINT_COLUMNS, PRESET_COLUMNS, endpoint_row, preset_row
from sandserve.cli.program import program
from sandserve.cli.tables import Column, render_table
from sandserve.presets import PRESETS
from sandserve.serve import lifecycle
from sandserve.serve.ledger import Registry

LONG_NAME = "a-served-model-name-long-enough-to-crowd-any-table"


def drawn(table: object, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=True)
    console.print(table, soft_wrap=False)
    return console.file.getvalue()  # type: ignore[attr-defined]


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "80"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def two_endpoints(fake_pipeline) -> list[str]:
    return [
        lifecycle.up(fake_spec()).id,
        lifecycle.up(fake_spec(served_name=LONG_NAME)).id,
    ]


# --- into a pipe --------------------------------------------------------------------------------------------


def test_ls_into_a_pipe_is_tab_separated_with_whole_ids(two_endpoints):
    header, *lines = run("ls").splitlines()
    assert header.split("\t") == [column.header for column in ENDPOINT_COLUMNS]
    assert [line.split("\t")[0] for line in lines] == two_endpoints
    long = lines[1].split("\t")
    assert long[1:6] == ["ready", "fake", "fake", LONG_NAME, long[5]] and long[5].startswith(
        "http://127.0.0.1:"
    )
    assert "…" not in run("ls") and "\x1b" not in run("ls")


def test_presets_into_a_pipe_name_every_preset_whole():
    header, *lines = run("presets").splitlines()
    assert header.split("\t")[:2] == ["preset", "model"]
    assert [line.split("\t")[0] for line in lines] == [preset.name for preset in PRESETS]
    assert all(len(line.split("\t")) == len(PRESET_COLUMNS) for line in lines)


def test_status_into_a_pipe_is_one_field_a_line(two_endpoints):
    fields = dict(line.split("\t", 1) for line in run("status", two_endpoints[1]).splitlines())
    assert fields["id"] == two_endpoints[1] and fields["state"] == "ready" and fields["model"] == LONG_NAME
    assert fields["kv_pool_tokens"] == "8192" and "phase ready" in fields


def test_status_of_a_server_that_is_gone_says_so(two_endpoints, fake_pipeline):
    fake_pipeline.servers[two_endpoints[0]].stop()
    fields = dict(line.split("\t", 1) for line in run("status", two_endpoints[0]).splitlines())
    assert fields["state"] == "dead"
    assert fields["note"] == f"its server is gone: `{program()} down {two_endpoints[0]}` clears it"


def test_no_endpoints_prints_nothing_on_stdout():
    result = CliRunner().invoke(main, ["ls"])
    assert result.exit_code == 0 and result.stdout == "" and "no endpoints" in result.stderr


# --- on a terminal ------------------------------------------------------------------------------------------


def test_ls_at_80_columns_shows_every_id_whole(two_endpoints):
    rows = [endpoint_row(record) for record in Registry().list()]
    text = drawn(render_table(ENDPOINT_COLUMNS, rows, width=80), 80)
    assert all(endpoint_id in text for endpoint_id in two_endpoints)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "not shown at this width:" in text


def test_presets_at_80_columns_show_every_name_and_model_whole():
    rows = [preset_row(preset) for preset in PRESETS]
    text = drawn(render_table(PRESET_COLUMNS, rows, width=80), 80)
    for preset in PRESETS:
        assert any(line.startswith(f"{preset.name} ") and preset.model in line for line in text.splitlines())
    shown = " ".join(text.split())
    assert "not shown at this width: engine, reasoning, tools, gpus/memory, flags / env, note" in shown


def test_a_wider_terminal_shows_more_columns_and_no_caption():
    rows = [preset_row(preset) for preset in PRESETS]
    at_120 = drawn(render_table(PRESET_COLUMNS, rows, width=120), 120)
    header = at_120.splitlines()[0]
    assert "reasoning" in header and "gpus/memory" in header and "flags / env" not in header
    assert "not shown at this width: tools, flags / env, note" in at_120
    at_400 = drawn(render_table(PRESET_COLUMNS, rows, width=400), 400)
    assert "flags / env" in at_400 and "not shown" not in at_400


def test_a_kept_column_stays_whole_even_when_nothing_else_fits():
    columns = (Column("id", keep=True), Column("note"))
    rows = [["an-identifier-of-forty-characters-000000", "free text " * 10]]
    text = drawn(render_table(columns, rows, width=50), 50)
    assert "an-identifier-of-forty-characters-000000" in text


def test_free_text_is_shortened_to_one_line_before_it_is_left_out():
    columns = (Column("id", keep=True), Column("note", drop_order=0, cut=True))
    rows = [["short-id", "a note that is long enough to need cutting at this width, and so it is cut"]]
    text = drawn(render_table(columns, rows, width=50), 50)
    row = text.splitlines()[2]
    assert row.startswith("short-id  a note that") and row.rstrip()[-1] == "…"
    assert len(text.splitlines()) == 3 and "not shown" not in text
    narrow = drawn(render_table(columns, rows, width=15), 15)
    assert "short-id" in narrow and "not shown at this width: note" in " ".join(narrow.split())


def test_a_gpu_hour_price_adds_a_cost_field_and_its_note_goes_to_stderr(two_endpoints, monkeypatch):
    monkeypatch.setenv("SANDSERVE_GPU_HOUR_PRICE", "2.5")
    result = CliRunner().invoke(main, ["ls"], env={"COLUMNS": "80"}, catch_exceptions=False)
    rows = [line.split("\t") for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == two_endpoints
    assert all(len(row) == len(ENDPOINT_COLUMNS) + 1 and row[-1] == "-" for row in rows)  # no GPU held
    assert "per GPU hour (SANDSERVE_GPU_HOUR_PRICE)" in result.stderr


def test_fleet_status_at_80_columns_shows_every_worker_id_whole():
    from sandserve.cli.fleet import _worker_columns

    ids = ["tiny-random-llama-w0-9f8e7d-with-a-long-name", "tiny-random-llama-w1-0a1b2c"]
    rows = [
        [worker, f"http://127.0.0.1:4{n}123", "healthy", "running", "0", "0", "75%", "warm 41 s", f"gw-{n}"]
        for n, worker in enumerate(ids)
    ]
    text = drawn(render_table(_worker_columns(), rows, width=80), 80)
    assert all(worker in text for worker in ids) and "healthy" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_every_verb_is_found_on_demand_and_none_is_left_out() -> None:
    import importlib

    from sandserve.cli._app import VERB_MODULES

    for module in set(VERB_MODULES.values()):
        importlib.import_module(f"sandserve.cli.{module}")
    assert sorted(main.commands) == sorted(VERB_MODULES)
    for verb, module in VERB_MODULES.items():
        assert main.commands[verb].callback.__module__ == f"sandserve.cli.{module}"
