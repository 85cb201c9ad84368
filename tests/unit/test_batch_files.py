"""The batch files without any process: input lines, foreign outputs, the lock, torn lines, symlinks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandserve.batch.files import (
    BatchOutputSink,
    InvalidLine,
    JsonlSink,
    OutputLock,
    check_belongs,
    drop_error_lines,
    errors_path,
    lock_path,
    parse_input_line,
    read_previous_output,
    scan_input,
)
from sandserve.batch.http import is_error_body
from sandserve.batch.prefix import plan_prefix_waves, plan_waves, prefix_key, prompt_text
from sandserve.batch.types import BatchRequest, BatchResult, ResultError
from sandserve.cli._app import exit_code_for
from sandserve.errors import BatchIncompleteError, BatchInputError, BatchOutputError


def line(custom_id: str, **extra: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "body": {"messages": []}, **extra})


def output_line(custom_id: str, ok: bool = True) -> str:
    error = None if ok else {"code": "http_400", "message": "bad"}
    return json.dumps({"id": "batch_req_1", "custom_id": custom_id, "response": None, "error": error})


# --- input lines --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "line 4: not valid JSON"),
        ("[1, 2]", "line 4: expected a JSON object"),
        ('"a string"', "line 4: expected a JSON object"),
        (json.dumps({"body": {}}), "line 4: missing custom_id"),
        (json.dumps({"custom_id": "", "body": {}}), "line 4: missing custom_id"),
        (json.dumps({"custom_id": 7, "body": {}}), "line 4: missing custom_id"),
        (line("x", method="GET"), "method must be POST, not 'GET'"),
        (line("x", url="/v1/embeddings"), "unsupported url '/v1/embeddings'"),
        (json.dumps({"custom_id": "x"}), "missing body (a JSON object)"),
        (json.dumps({"custom_id": "x", "body": [1]}), "missing body (a JSON object)"),
    ],
)
def test_unusable_lines_become_invalid_lines_naming_their_line(text: str, expected: str) -> None:
    parsed = parse_input_line(text, 4)
    assert isinstance(parsed, InvalidLine) and expected in parsed.message


@pytest.mark.parametrize("blank", ["", "\n", "   \t \n"])
def test_blank_lines_are_skipped(blank: str) -> None:
    assert parse_input_line(blank, 1) is None


def test_a_valid_line_defaults_to_chat_completions() -> None:
    parsed = parse_input_line(line("a"), 1)
    assert parsed == BatchRequest("a", {"messages": []}, "/v1/chat/completions")


def test_an_invalid_line_never_takes_a_real_custom_ids_name(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("{bad\n" + line("line-1") + "\n" + line("line-1-invalid") + "\n[]\n")
    scan = scan_input(inp)
    assert scan.ids == {"line-1", "line-1-invalid", "line-1-invalid-invalid", "line-4"}
    assert sorted(item.custom_id for item in scan.invalid) == ["line-1-invalid-invalid", "line-4"]


def test_many_duplicates_are_summarised(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(line(f"d{i}") + "\n" + line(f"d{i}") + "\n" for i in range(7)))
    with pytest.raises(BatchInputError, match=r"'d0' \(again on line 2\).* and 2 more"):
        scan_input(inp)


# --- foreign outputs are refused, untouched -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"my notes\nmore notes\n",
        b"my notes\nthe last line without a newline",
        (line("a") + "\n").encode(),  # an input file given as the output
        b"[1, 2, 3]\n",
        (output_line("a") + "\n" + "plain text\n").encode(),
        (output_line("a") + "\n" + '{"custom_id": "b"').encode(),  # a torn tail this runner did not write
    ],
    ids=["text", "text-no-newline", "input-file", "json-array", "mixed", "foreign-tail"],
)
def test_a_file_that_is_not_a_batch_output_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(content)
    with pytest.raises(BatchOutputError, match="is not a batch output of this input"):
        read_previous_output(out)
    assert out.read_bytes() == content


def test_an_output_of_another_input_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(output_line("a") + "\n" + output_line("zzz") + "\n")
    previous = read_previous_output(out)
    with pytest.raises(BatchOutputError, match="custom_id 'zzz', which the input does not have"):
        check_belongs(previous, {"a", "b"}, out)
    check_belongs(previous, {"a", "zzz"}, out)


def test_our_own_torn_last_line_is_accepted_and_cut_off_on_open(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    whole = (output_line("a") + "\n").encode()
    out.write_bytes(whole + b'{"id":"batch_req_abc","custom_id":"b","resp')
    previous = read_previous_output(out)
    assert previous.succeeded == {"a"} and previous.failed == set()
    with JsonlSink(out):
        pass
    assert out.read_bytes() == whole


def test_results_split_between_the_output_and_its_error_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with BatchOutputSink(out, retry_errors=False, errors_in_output=False) as sink:
        sink(BatchResult("ok1", status_code=200, body={}))
        assert not errors_path(out).exists(), "no error file until there is an error"
        sink(BatchResult("bad1", status_code=400, body={}, error=ResultError("http_400", "no")))
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == ["ok1"]
    assert [json.loads(x)["custom_id"] for x in errors_path(out).read_text().splitlines()] == ["bad1"]
    previous = read_previous_output(out)
    assert previous.succeeded == {"ok1"} and previous.failed == {"bad1"} and not previous.failed_in_output


# --- one writer ---------------------------------------------------------------------------------------------


def test_a_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
        with pytest.raises(BatchOutputError, match=f"another sandserve batch \\(pid {os.getpid()}\\)"):
            OutputLock(out).__enter__()
    assert not lock_path(out).exists(), "the lock file goes with the run"
    with OutputLock(out):  # and the output can be locked again
        pass


def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    lock_path(out).write_text("999999\n")  # a run killed with -9: its file stays, its flock went with it
    with OutputLock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())


def test_a_symlinked_output_is_locked_and_rewritten_through_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_text(output_line("a") + "\n" + output_line("b", ok=False) + "\n")
    real.chmod(0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert lock_path(link) == lock_path(real)
    drop_error_lines(real)
    assert link.is_symlink() and [json.loads(x)["custom_id"] for x in link.read_text().splitlines()] == ["a"]
    assert real.stat().st_mode & 0o777 == 0o640


# --- prefix order keeps keys, not bodies --------------------------------------------------------------------


def test_prefix_keys_group_on_the_first_1024_characters() -> None:
    shared = "x" * 1024
    assert prefix_key(shared + "tail one") == prefix_key(shared + "another tail")
    assert prefix_key(shared[:-1] + "y" + "tail") != prefix_key(shared + "tail")
    assert len(prefix_key("z" * 100_000)) < 100, "the key stays small however long the prompt"


def test_offset_waves_match_request_waves() -> None:
    requests = [
        BatchRequest(f"{g}{i}", {"messages": [{"role": "user", "content": g * 2000 + str(i)}]})
        for i in range(3)
        for g in "abc"
    ]
    by_request = plan_prefix_waves(requests)
    keyed = [(prefix_key(prompt_text(r)), len(prompt_text(r)), index) for index, r in enumerate(requests)]
    by_offset = plan_waves(keyed)
    assert [sorted(r.custom_id for r in wave) for wave in by_request] == [
        sorted(requests[i].custom_id for i in wave) for wave in by_offset
    ]


# --- what is final ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "final"),
    [
        ({"error": {"message": "bad schema", "type": "invalid_request_error"}}, True),
        ({"object": "error", "message": "prompt too long"}, True),
        ({"detail": "Not Found"}, True),
        ("<html>502 Bad Gateway</html>", False),
        ({}, False),
        (None, False),
    ],
)
def test_only_an_error_body_makes_a_4xx_final(body: object, final: bool) -> None:
    assert is_error_body(body) is final


def test_incomplete_batches_say_how_many_and_what_to_do() -> None:
    error = BatchIncompleteError(unfinished=4, total=300, reason="the endpoint went away")
    assert exit_code_for(error) == 3  # the CLI maps it (cli/_app.py)
    assert error.message.startswith("4 of 300 requests still have no result: the endpoint went away")
    assert error.hint and "run the same command again" in error.hint
