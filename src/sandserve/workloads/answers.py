"""A classification run's answers, kept as they come so that a run stopped by Ctrl-C (or a failure) goes on
where it stopped: one OpenAI batch output file per pass (``author.jsonl``, ``setting.jsonl``) and the seconds
each pass has run so far (``progress.json``), in a folder beside the run's report folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandserve.batch import BatchResult
from sandserve.batch.files import parse_output_line, write_json_atomically
from sandserve.batch.types import ResultError, loads
from sandserve.client.usage import usage_of

PROGRESS = "progress.json"


def answers_dir_for(run_dir: Path) -> Path:
    """Where a run's answers are kept until its report is written (then they move into it, as ``answers``)."""
    return run_dir.with_name(run_dir.name + ".answers")


def answers_file(folder: Path, question: str) -> Path:
    return folder / f"{question}.jsonl"


def kept_answers(folder: Path, question: str) -> list[BatchResult]:
    """The answers an earlier run kept for ``question`` (whole lines only: a line torn by a crash is a request
    to send again)."""
    try:
        lines = answers_file(folder, question).read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    results = []
    for line in lines[:-1]:  # the last piece is empty, or a torn line
        if parse_output_line(line) is None:
            continue
        item = loads(line)
        response = item.get("response") or {}
        error = item.get("error")
        results.append(
            BatchResult(
                custom_id=item["custom_id"],
                status_code=response.get("status_code"),
                request_id=response.get("request_id") or "",
                body=response.get("body"),
                error=None
                if error is None
                else ResultError(str(error.get("code")), str(error.get("message"))),
                usage=usage_of(response.get("body")),
            )
        )
    return results


def progress(folder: Path) -> dict[str, Any]:
    """Per pass: ``wall_s`` (seconds it has run, every run added up), ``answered`` and ``total``."""
    try:
        data = json.loads((folder / PROGRESS).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_progress(folder: Path, question: str, *, wall_s: float, answered: int, total: int) -> None:
    data = progress(folder)
    data[question] = {"wall_s": wall_s, "answered": answered, "total": total}
    write_json_atomically(folder / PROGRESS, data)
