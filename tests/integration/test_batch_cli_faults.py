"""`sandserve batch` as a user runs it, against a misbehaving local server: exit codes, messages, and that no
request is lost, duplicated or half-written, whatever the fault."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, sandserve_command
from faultserver import FaultServer
from polling import poll_until

from sandserve.batch.files import errors_path, lock_path, summary_path


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        yield fault_server


def write_batch(path: Path, ids: list[str]) -> Path:
    lines = [
        json.dumps(
            {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"user": cid, "messages": [{"role": "user", "content": f"question {cid}"}]},
            }
        )
        for cid in ids
    ]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"{path} ends in a half-written line"
    return [json.loads(line) for line in text.splitlines()]


def answered(out: Path) -> Counter[str]:
    """custom_id -> how many lines (OUT and its error file) hold it."""
    return Counter(line["custom_id"] for line in lines_of(out) + lines_of(errors_path(out)))


def said(done: subprocess.CompletedProcess[str]) -> str:
    """stderr with the terminal's line wrapping undone."""
    return " ".join(done.stderr.split())


def batch(server: FaultServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("batch", *args, env={"ENDPOINT": server.url})


# --- the OpenAI semantics: only the server's word for a request is final ------------------------------------


def test_a_5xx_storm_leaves_no_result_and_a_plain_rerun_completes(
    server: FaultServer, tmp_path: Path
) -> None:
    ids = [f"r{i}" for i in range(30)]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    for cid in ids[10:]:
        server.script(cid, *["500"] * 3)
    first = batch(server, str(inp), str(out), "--max-retries", "1", "--concurrency", "2")
    assert first.returncode == 3, first.stderr
    assert "requests still have no result" in said(first) and "run the same command again" in said(first)
    summary = json.loads(summary_path(out).read_text())
    assert summary["unfinished"] == 30 - summary["succeeded"] and summary["unfinished"] >= 10
    assert set(answered(out)) <= set(ids[:10]) and max(answered(out).values()) == 1

    second = batch(server, str(inp), str(out), "--max-retries", "3")
    assert second.returncode == 0, second.stderr
    assert answered(out) == Counter({cid: 1 for cid in ids})
    assert all(line["error"] is None for line in lines_of(out)) and not errors_path(out).exists()


def test_a_4xx_with_an_error_body_is_final_and_goes_to_the_error_file(
    server: FaultServer, tmp_path: Path
) -> None:
    inp, out = write_batch(tmp_path / "in.jsonl", ["good", "bad"]), tmp_path / "out.jsonl"
    server.script("bad", "400")
    done = batch(server, str(inp), str(out))
    assert done.returncode == 1 and "1 requests ended in an error the server gave for them" in said(done)
    assert [line["custom_id"] for line in lines_of(out)] == ["good"]
    assert [line["error"]["code"] for line in lines_of(errors_path(out))] == ["http_400"]
    again = batch(server, str(inp), str(out))  # final: not sent again
    assert again.returncode == 1 and server.attempts["bad"] == 1
    retried = batch(server, str(inp), str(out), "--retry-errors")
    assert retried.returncode == 0 and answered(out) == Counter({"good": 1, "bad": 1})
    assert not errors_path(out).exists(), "an error file left empty by --retry-errors is removed"


def test_the_endpoint_going_away_stops_the_run_and_a_new_endpoint_finishes_it(tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(40)]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    with FaultServer() as dying:
        dying.script("r12", "down")
        first = batch(dying, str(inp), str(out), "--concurrency", "1", "--max-retries", "2")
    assert first.returncode == 3 and "no connection" in said(first)
    assert "still have no result" in said(first)
    before = answered(out)
    assert set(before) == {f"r{i}" for i in range(13)}
    with FaultServer() as fresh:
        second = batch(fresh, str(inp), str(out))
        assert second.returncode == 0, second.stderr
        assert set(fresh.attempts) == set(ids) - set(before), "only what had no result is sent again"
    assert answered(out) == Counter({cid: 1 for cid in ids})


def test_a_timeout_per_attempt_is_not_a_result(server: FaultServer, tmp_path: Path) -> None:
    inp, out = write_batch(tmp_path / "in.jsonl", ["slow"]), tmp_path / "out.jsonl"
    server.slow_s = 3
    server.default_action = "slow"
    done = batch(server, str(inp), str(out), "--timeout", "0.3", "--max-retries", "1")
    assert done.returncode == 3 and "1 of 1 requests still have no result" in said(done)
    assert answered(out) == Counter() and server.attempts["slow"] == 2


def batch_under_way(server: FaultServer, inp: Path, out: Path) -> subprocess.Popen[str]:
    """`batch` two at a time in a process of its own, once it has written its first five answers."""
    run = subprocess.Popen(
        [*sandserve_command(), "batch", str(inp), str(out), "--concurrency", "2"],
        env={**os.environ, "ENDPOINT": server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= 5, what="5 answers written")
    except BaseException:
        run.kill()
        run.communicate()
        raise
    return run


# --- one writer per output ----------------------------------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_and_nothing_is_sent_twice(
    server: FaultServer, tmp_path: Path
) -> None:
    ids = [f"r{i}" for i in range(150)]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    server.default_action = "slow"
    server.slow_s = 0.03
    first = batch_under_way(server, inp, out)
    try:
        second = batch(server, str(inp), str(out), "--concurrency", "8")
        assert second.returncode == 2
        assert f"another sandserve batch (pid {first.pid}) is writing it" in said(second), second.stderr
        first.communicate(timeout=120)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()  # reaps it and closes its pipes
    assert answered(out) == Counter({cid: 1 for cid in ids})
    assert max(server.attempts.values()) == 1, "no request was sent by both runs"
    assert not lock_path(out).exists()


def test_ctrl_c_writes_the_summary_says_what_is_left_and_the_printed_command_finishes(
    server: FaultServer, tmp_path: Path
) -> None:
    ids = [f"r{i}" for i in range(120)]
    inp, out = write_batch(tmp_path / "in.jsonl", ids), tmp_path / "out.jsonl"
    server.default_action = "slow"
    server.slow_s = 0.05
    run = batch_under_way(server, inp, out)
    try:
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, stderr
    done = len(lines_of(out))
    summary = json.loads(summary_path(out).read_text())
    assert summary["stopped_because"] == "interrupted (Ctrl-C)"
    assert summary["succeeded"] == done and summary["unfinished"] == len(ids) - done > 0
    told = " ".join(stderr.split())
    assert f"{done} of {len(ids)} requests done, {len(ids) - done} left" in told
    header, row = stdout.splitlines()  # the summary table, into a pipe
    assert header.startswith("requests\tok") and row.split("\t")[:4] == [
        str(done),
        str(done),
        "0",
        str(len(ids) - done),
    ]
    command = told.split("to send the rest: ")[1]
    server.default_action = "ok"
    rerun = subprocess.run(
        shlex.split(command), env={**os.environ, "ENDPOINT": server.url}, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert answered(out) == Counter({cid: 1 for cid in ids})


def test_a_file_that_is_not_a_batch_output_is_refused_byte_identical(
    server: FaultServer, tmp_path: Path
) -> None:
    inp = write_batch(tmp_path / "in.jsonl", ["a", "b"])
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my notes\nsecond line without a newline")
    before = notes.read_bytes()
    done = batch(server, str(inp), str(notes))
    assert done.returncode == 2 and "is not a batch output of this input" in said(done)
    assert "left as it is" in said(done)
    assert notes.read_bytes() == before and not server.arrivals
    assert not errors_path(notes).exists() and not summary_path(notes).exists()


def test_another_batchs_output_is_refused(server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert batch(server, str(write_batch(tmp_path / "one.jsonl", ["x1", "x2"])), str(out)).returncode == 0
    before = out.read_bytes()
    done = batch(server, str(write_batch(tmp_path / "two.jsonl", ["y1"])), str(out))
    assert done.returncode == 2 and "which the input does not have" in said(done)
    assert out.read_bytes() == before


def test_a_symlinked_output_stays_a_link_and_is_written_through(server: FaultServer, tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", ["a", "b", "c"])
    server.script("b", "400", "400")
    real = tmp_path / "data" / "real.jsonl"
    real.parent.mkdir()
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    assert batch(server, str(inp), str(link)).returncode == 1
    assert batch(server, str(inp), str(link), "--retry-errors").returncode == 1  # b fails again: 400
    assert link.is_symlink() and link.resolve() == real
    assert sorted(line["custom_id"] for line in lines_of(real)) == ["a", "c"]
    assert errors_path(link) == Path(f"{real}.errors.jsonl")
    assert [line["custom_id"] for line in lines_of(errors_path(link))] == ["b"]


# --- bad input: exit 2, nothing sent, nothing written -------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "it holds no requests"),
        (b"\n\n   \n", "it holds no requests"),
        (
            b'{"custom_id": "a", "body": {}}\n{"custom_id": "a", "body": {}}\n',
            "duplicate custom_id 'a' (again on line 2)",
        ),
    ],
    ids=["empty", "blank-lines", "duplicate"],
)
def test_unusable_input_is_refused_before_anything_is_sent(
    server: FaultServer, tmp_path: Path, content: bytes, message: str
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_bytes(content)
    done = batch(server, str(inp), str(out))
    assert done.returncode == 2 and message in said(done)
    assert not out.exists() and not server.arrivals


def test_an_invalid_first_line_does_not_collide_with_a_real_line_1(
    server: FaultServer, tmp_path: Path
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    real = {"custom_id": "line-1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}
    inp.write_text("{not json\n" + json.dumps(real) + "\n")
    done = batch(server, str(inp), str(out))
    assert done.returncode == 1, done.stderr
    assert [line["custom_id"] for line in lines_of(out)] == ["line-1"]
    invalid = lines_of(errors_path(out))
    assert [line["custom_id"] for line in invalid] == ["line-1-invalid"]
    assert invalid[0]["error"]["message"].startswith("line 1: not valid JSON")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0"], "must be a positive number of seconds"),
        (["--timeout", "-5"], "must be a positive number of seconds"),
        (["--timeout", "nan"], "must be a positive number of seconds"),
        (["--max-retries", "-1"], "-1 is not in the range"),
        (["--concurrency", "0"], "0 is not in the range"),
        (["--order", "random"], "'random' is not one of"),
    ],
)
def test_bad_batch_options_exit_2(server: FaultServer, tmp_path: Path, args: list[str], message: str) -> None:
    inp, out = write_batch(tmp_path / "in.jsonl", ["a"]), tmp_path / "out.jsonl"
    done = batch(server, str(inp), str(out), *args)
    assert done.returncode == 2 and message in said(done)
    assert not out.exists() and not server.arrivals


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: (tmp / "missing.jsonl", tmp / "out.jsonl"), "no such file"),
        (lambda tmp: (tmp, tmp / "out.jsonl"), "not a regular file"),
        (lambda tmp: (tmp / "in.jsonl", tmp / "in.jsonl"), "it is the input file"),
        (lambda tmp: (tmp / "in.jsonl", tmp), "it is a directory"),
        (lambda tmp: (tmp / "in.jsonl", tmp / "nowhere" / "out.jsonl"), "does not exist"),
    ],
    ids=["missing-input", "input-is-a-folder", "output-is-input", "output-is-a-folder", "no-output-folder"],
)
def test_bad_paths_exit_2_before_the_endpoint_is_asked(tmp_path: Path, make: Any, message: str) -> None:
    write_batch(tmp_path / "in.jsonl", ["a"])
    inp, out = make(tmp_path)
    done = run_cli("batch", str(inp), str(out))  # no endpoint at all: the paths are checked first
    assert done.returncode == 2 and message in said(done), done.stderr
    assert "Traceback" not in done.stderr
