"""The classification workload: exact slicing, scoring, the report, and a real run on the local engine."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess

import pytest
from conftest import as_typed, sandserve_command
from conftest import run_cli as run_sandserve
from polling import poll_until

from sandserve.errors import ConfigError
from sandserve.workloads import corpus
from sandserve.workloads.classify import (
    AUTHOR,
    AUTHOR_QUESTION,
    ClassificationReport,
    PassReport,
    answer_request,
    summary_lines,
)
from sandserve.workloads.corpus import (
    BOOKS,
    PASSAGE_CHARS,
    Passage,
    book_body,
    select_books,
    slice_passages,
    synthetic_book,
    write_synthetic_corpus,
)
from sandserve.workloads.report import write_report


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_sandserve(*args, env=env, timeout=300)  # this file's commands run longer


def test_slicing_follows_the_guide_to_the_character():
    text = synthetic_book(1)
    body = text.split("*** START")[1].split("*** END")[0]
    n = len(body)
    trimmed = book_body(text)
    # The end trim is ceil(n / 10) (Python's -n // 10), the start trim floor(n / 10).
    assert trimmed == body[n // 10 : n - (n + 9) // 10]
    passages = slice_passages("Austen", 1342, trimmed, 21)
    step = (len(trimmed) - PASSAGE_CHARS) // 21
    assert [p.offset for p in passages] == [i * step for i in range(21)]
    assert all(len(p.text) == PASSAGE_CHARS for p in passages)
    assert all(p.text == trimmed[p.offset : p.offset + PASSAGE_CHARS] for p in passages)
    assert passages[-1].offset + PASSAGE_CHARS <= len(trimmed)


def test_crlf_and_bom_are_normalised(tmp_path):
    lf = write_synthetic_corpus(tmp_path / "lf", ["Poe"])
    crlf = write_synthetic_corpus(tmp_path / "crlf", ["Poe"], newline="\r\n")
    bom = tmp_path / "bom"
    bom.mkdir()
    (bom / "pg2148.txt").write_bytes(b"\xef\xbb\xbf" + (lf / "pg2148.txt").read_bytes())
    books = select_books(["Poe"])
    expected = corpus.load_passages(books, 5, corpus_dir=lf)
    assert corpus.load_passages(books, 5, corpus_dir=crlf) == expected
    assert corpus.load_passages(books, 5, corpus_dir=bom) == expected
    assert "\r" not in expected[0].text


def test_books_are_chosen_by_author_or_id():
    assert select_books(["poe", "1342"]) == {"Poe": 2148, "Austen": 1342}
    assert select_books(None) == BOOKS
    with pytest.raises(ConfigError, match="Unknown book '999'"):
        select_books(["999"])


def test_a_book_without_markers_or_too_short_is_refused():
    with pytest.raises(corpus.CorpusError, match="START"):
        book_body("just some text")
    with pytest.raises(corpus.CorpusError, match="too short"):
        slice_passages("Poe", 2148, "x" * 1000, 3)


def test_the_request_is_the_guides():
    passage = Passage("Poe", 2148, 0, 0, "Once upon a midnight dreary")
    from sandserve.endpoint import Endpoint

    sglang = answer_request(
        Endpoint(id="e", url="http://x", model="gpt-oss-20b", engine="sglang"), passage, AUTHOR
    )
    assert sglang.body["messages"] == [
        {"role": "user", "content": f"Once upon a midnight dreary\n\n{AUTHOR_QUESTION} Reply as JSON."}
    ]
    assert sglang.body["reasoning_effort"] == "low" and sglang.body["max_tokens"] == 2048
    assert sglang.body["response_format"]["json_schema"]["schema"]["properties"]["author"]["enum"] == sorted(
        BOOKS
    )
    assert AUTHOR_QUESTION.startswith("Which of these authors wrote this passage: Austen, Bronte, Dickens")


def known_report() -> ClassificationReport:
    truths = ["Austen", "Austen", "Austen", "Poe", "Poe", "Poe"]
    answers = ["Austen", "Poe", "Austen", "Poe", None, "Wilde"]
    settings = ["indoors", "indoors", "outdoors", "outdoors", "outdoors", None]
    first = PassReport("q1", 6, 5, 1, wall_s=2.0, input_tokens=6000, output_tokens=60, cached_tokens=0)
    second = PassReport("q2", 6, 5, 0, wall_s=0.5, input_tokens=6000, output_tokens=30, cached_tokens=5400)
    return ClassificationReport(
        model="m",
        engine="sglang",
        authors=["Austen", "Poe"],
        author_pass=first,
        setting_pass=second,
        truths=truths,
        author_answers=answers,
        setting_answers=settings,
        passage_ids=[f"p{i}" for i in range(6)],
    )


def test_scores_come_out_right_from_known_answers():
    report = known_report()
    assert report.correct == 3 and report.accuracy == 0.5
    assert report.per_author() == {"Austen": (2, 3), "Poe": (1, 3)}
    confusion = report.confusion()
    assert confusion["Austen"]["Austen"] == 2 and confusion["Austen"]["Poe"] == 1
    assert confusion["Poe"]["Poe"] == 1 and confusion["Poe"]["Wilde"] == 1 and confusion["Poe"]["(none)"] == 1
    assert sum(sum(row.values()) for row in confusion.values()) == 6
    assert report.settings() == {
        "Austen": {"indoors": 2, "outdoors": 1},
        "Poe": {"indoors": 0, "outdoors": 2},
    }
    assert report.leaning() == {"indoors": [("Austen", 2, 3)], "outdoors": [("Poe", 2, 2)]}
    assert report.speedup == 4.0
    lines = summary_lines(report)
    assert "accuracy: 3/6 (50%)" in lines and "per author: Austen 2/3, Poe 1/3" in lines
    assert "cached: 5,400/6,000 prompt tokens from cache" in lines


def test_the_report_files_are_written_whole(tmp_path):
    run_dir = tmp_path / "run"
    paths = write_report(run_dir, known_report())
    assert [p.name for p in paths] == ["report.json", "report.md", "confusion.png"]
    data = json.loads((run_dir / "report.json").read_text())
    assert data["correct"] == 3 and data["pass2_speedup"] == 4.0
    assert data["setting_pass"]["cached_share"] == 0.9
    assert "| Austen | 2 | 3 | 2 | 1 |" in (run_dir / "report.md").read_text()
    assert (run_dir / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "run.partial").exists()
    with pytest.raises(FileExistsError):
        write_report(run_dir, known_report())


def test_classify_runs_both_passes_on_the_local_engine(local_endpoint, tmp_path):
    corpus_dir = write_synthetic_corpus(tmp_path / "books", ["Austen", "Poe"])
    run_dir = tmp_path / "run"
    result = run_cli(
        "classify",
        "--corpus-dir",
        str(corpus_dir),
        "--books",
        "Austen,Poe",
        "--per-book",
        "2",
        "--temperature",
        "0",
        "--run-dir",
        str(run_dir),
    )
    assert result.returncode == 0, result.stderr
    assert "pass 1 - author: 4 passages" in result.stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert report["passages"] == 4 and report["author_pass"]["failed"] == 0
    assert all(
        answer["author"] in BOOKS for answer in report["answers"]
    )  # the enum holds even for random weights
    assert all(answer["setting"] in ("indoors", "outdoors") for answer in report["answers"])
    assert report["author_pass"]["input_tokens"] > 0
    # The passages lead every prompt: pass 2 finds them in the server's cache.
    assert report["setting_pass"]["cached_tokens"] > report["setting_pass"]["input_tokens"] / 2


def test_ctrl_c_keeps_the_answers_and_the_printed_command_goes_on_from_them(local_endpoint, tmp_path):
    corpus_dir = write_synthetic_corpus(tmp_path / "books", ["Austen", "Poe"])
    run_dir = tmp_path / "run"
    args = ["classify", "--corpus-dir", str(corpus_dir), "--books", "Austen,Poe", "--per-book", "3",
            "--concurrency", "1", "--temperature", "0", "--run-dir", str(run_dir)]  # fmt: skip
    kept = tmp_path / "run.answers" / "author.jsonl"
    process = subprocess.Popen(
        [*sandserve_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        poll_until(
            lambda: kept.exists() and kept.read_bytes().count(b"\n") >= 2, what="2 answers kept", timeout=120
        )
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    told = " ".join(stderr.split())
    answered = kept.read_bytes().count(b"\n")
    assert f"pass 1 - author: {answered} of 6 answered, pass 2 - setting: not started" in told
    assert not run_dir.exists()  # no report from half a run

    again = shlex.split(told.split("to go on from there: ")[1])
    rest = subprocess.run(again, capture_output=True, text=True, timeout=300)
    assert rest.returncode == 0, rest.stderr
    assert "going on from the answers kept" in rest.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["passages"] == 6 and report["author_pass"]["failed"] == 0
    assert all(answer["author"] in BOOKS for answer in report["answers"])
    # Each passage was asked once per question, over both runs.
    for question in ("author", "setting"):
        lines = (run_dir / "answers" / f"{question}.jsonl").read_text().splitlines()
        ids = [json.loads(line)["custom_id"] for line in lines]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 6
    assert report["author_pass"]["input_tokens"] > 0 and not (tmp_path / "run.answers").exists()


def test_classify_refuses_bad_input_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    unknown = run_cli(
        "classify",
        "--books",
        "Tolkien",
        "--run-dir",
        str(run_dir),
        env={"ENDPOINT": "http://127.0.0.1:9", "MODEL": "m"},
    )
    assert unknown.returncode == 2 and "Unknown book 'Tolkien'" in unknown.stderr

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    corpus_dir = write_synthetic_corpus(tmp_path / "books", ["Poe"])
    down = run_cli(
        "classify",
        "--corpus-dir",
        str(corpus_dir),
        "--books",
        "Poe",
        "--per-book",
        "1",
        "--run-dir",
        str(run_dir),
        env={"ENDPOINT": f"http://127.0.0.1:{port}", "MODEL": "m"},
    )
    assert down.returncode != 0 and "sandserve status" in as_typed(down.stderr)
    assert not run_dir.exists()


def test_a_book_that_cannot_be_downloaded_is_a_clear_error(tmp_path, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(corpus, "GUTENBERG_URL", f"http://127.0.0.1:{port}/pg{{id}}.txt")
    monkeypatch.setenv("SANDSERVE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(corpus.CorpusError, match="--corpus-dir"):
        corpus.load_book(2148, corpus_dir=tmp_path)
    assert list((tmp_path / "cache" / "gutenberg").iterdir()) == []  # no half file left in the cache


def test_a_book_is_downloaded_once_with_progress_then_read_from_the_cache(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    write_synthetic_corpus(served, ["Poe"], newline="\r\n")  # as Gutenberg serves it
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(corpus, "GUTENBERG_URL", f"http://127.0.0.1:{server.server_port}/pg{{id}}.txt")
        monkeypatch.setenv("SANDSERVE_CACHE_DIR", str(tmp_path / "cache"))
        progress: list[tuple[str, int, int | None]] = []
        first = corpus.load_book(2148, on_progress=lambda *update: progress.append(update))
        second = corpus.load_book(2148)
    finally:
        server.shutdown()
        server.server_close()
    assert first == second and "\r" not in first
    assert len(requests) == 1  # the second read came from the cache
    size = (served / "pg2148.txt").stat().st_size
    assert progress[-1] == ("pg2148.txt", size, size)
