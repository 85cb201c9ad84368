"""The guide's classification workload: who wrote each passage, then is the scene indoors or outdoors.

Pass 1 asks for the author (thirteen names, enforced by a JSON-schema enum) and fills the prefix cache with
the passages; pass 2 asks a new question about the same passages, which lead every prompt, so most of its
prompt tokens come from the cache. Both run through the batch runner. Every figure comes from the server's own
usage reports; nothing is counted on the client.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandserve.batch import BatchProgress, BatchRequest, BatchResult, default_concurrency, run_requests
from sandserve.batch.files import JsonlSink
from sandserve.endpoint import Endpoint
from sandserve.engines import get_engine
from sandserve.engines.priority import BATCH_PRIORITY, Priority
from sandserve.workloads.answers import answers_file, kept_answers, progress, record_progress
from sandserve.workloads.corpus import AUTHORS, Passage

AUTHOR_QUESTION = f"Which of these authors wrote this passage: {', '.join(AUTHORS)}?"
SETTING_QUESTION = "Is this scene set indoors or outdoors?"
SETTINGS = ["indoors", "outdoors"]
AUTHOR_SCHEMA = {
    "type": "object",
    "properties": {"author": {"type": "string", "enum": AUTHORS}},
    "required": ["author"],
}
SETTING_SCHEMA = {
    "type": "object",
    "properties": {"setting": {"type": "string", "enum": SETTINGS}},
    "required": ["setting"],
}
MAX_TOKENS = 2048


@dataclass(frozen=True)
class Question:
    name: str
    text: str
    schema: dict[str, Any]
    key: str


AUTHOR = Question("author", AUTHOR_QUESTION, AUTHOR_SCHEMA, "author")
SETTING = Question("setting", SETTING_QUESTION, SETTING_SCHEMA, "setting")


def prompt(passage: Passage, question: Question) -> str:
    # The passage leads and the question trails, so the passage is the prefix a second question reuses.
    return f"{passage.text}\n\n{question.text} Reply as JSON."


def answer_request(
    endpoint: Endpoint, passage: Passage, question: Question, temperature: float | None = None
) -> BatchRequest:
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": prompt(passage, question)}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": question.schema},
        },
        "max_tokens": MAX_TOKENS,
    }
    # Short reasoning at most before the JSON answer (the engine knows its own dial).
    body.update(get_engine(endpoint.engine).brief_answer_fields())
    if temperature is not None:
        body["temperature"] = temperature
    return BatchRequest(custom_id=f"{question.name}/{passage.id}", body=body)


def parse_answer(result: BatchResult, key: str) -> str | None:
    """The value the model chose, or None (an error, or reasoning that used up max_tokens)."""
    if not result.ok or not isinstance(result.body, dict):
        return None
    try:
        content = result.body["choices"][0]["message"]["content"]
        value = json.loads(content)[key] if content else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if isinstance(value, str) else None


@dataclass
class PassReport:
    question: str
    passages: int
    answered: int
    failed: int
    wall_s: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int

    @property
    def input_tokens_per_s(self) -> float:
        return self.input_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def input_m_tokens_per_hour(self) -> float:
        return self.input_tokens_per_s * 3600 / 1e6

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "input_tokens_per_s": self.input_tokens_per_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "input_m_tokens_per_hour": self.input_m_tokens_per_hour,
            "cached_share": self.cached_share,
        }

    @classmethod
    def of(cls, question: Question, wall_s: float, results: list[BatchResult]) -> PassReport:
        """The pass's figures: its answers' own token counts, over the seconds it ran (every run added up)."""
        answered = sum(parse_answer(result, question.key) is not None for result in results)
        return cls(
            question=question.text,
            passages=len(results),
            answered=answered,
            failed=sum(not result.ok for result in results),
            wall_s=wall_s,
            input_tokens=sum(result.usage.prompt_tokens for result in results),
            output_tokens=sum(result.usage.completion_tokens for result in results),
            cached_tokens=sum(result.usage.cached_tokens for result in results),
        )


@dataclass
class ClassificationReport:
    model: str
    engine: str
    authors: list[str]
    author_pass: PassReport
    setting_pass: PassReport
    truths: list[str]
    author_answers: list[str | None]
    setting_answers: list[str | None]
    passage_ids: list[str] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(guess == truth for guess, truth in zip(self.author_answers, self.truths, strict=True))

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.truths) if self.truths else 0.0

    def per_author(self) -> dict[str, tuple[int, int]]:
        """author -> (correct, passages)."""
        scores = {author: [0, 0] for author in self.authors}
        for guess, truth in zip(self.author_answers, self.truths, strict=True):
            scores[truth][0] += guess == truth
            scores[truth][1] += 1
        return {author: (ok, n) for author, (ok, n) in scores.items()}

    def confusion(self) -> dict[str, dict[str, int]]:
        """truth -> answer -> count; an unanswered passage counts under "(none)"."""
        matrix = {truth: dict.fromkeys([*AUTHORS, "(none)"], 0) for truth in self.authors}
        for guess, truth in zip(self.author_answers, self.truths, strict=True):
            matrix[truth][guess if guess in AUTHORS else "(none)"] += 1
        return matrix

    def settings(self) -> dict[str, dict[str, int]]:
        """author -> {"indoors": n, "outdoors": n} (unanswered passages left out)."""
        table = {author: dict.fromkeys(SETTINGS, 0) for author in self.authors}
        for setting, truth in zip(self.setting_answers, self.truths, strict=True):
            if setting in SETTINGS:
                table[truth][setting] += 1
        return table

    def leaning(self) -> dict[str, list[tuple[str, int, int]]]:
        """For each setting, the books whose predominant call it is: (author, calls for it, calls), most
        first."""
        sides: dict[str, list[tuple[str, int, int]]] = {side: [] for side in SETTINGS}
        for author, counts in self.settings().items():
            calls = sum(counts.values())
            if calls:
                top = max(SETTINGS, key=lambda side: counts[side])
                sides[top].append((author, counts[top], calls))
        return {side: sorted(books, key=lambda book: -book[1]) for side, books in sides.items()}

    @property
    def speedup(self) -> float:
        return self.author_pass.wall_s / self.setting_pass.wall_s if self.setting_pass.wall_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "engine": self.engine,
            "passages": len(self.truths),
            "accuracy": self.accuracy,
            "correct": self.correct,
            "per_author": {a: {"correct": ok, "passages": n} for a, (ok, n) in self.per_author().items()},
            "confusion": self.confusion(),
            "settings": self.settings(),
            "author_pass": self.author_pass.to_dict(),
            "setting_pass": self.setting_pass.to_dict(),
            "pass2_speedup": self.speedup,
            "answers": [
                {"passage": pid, "truth": truth, "author": author, "setting": setting}
                for pid, truth, author, setting in zip(
                    self.passage_ids, self.truths, self.author_answers, self.setting_answers, strict=True
                )
            ],
        }


PassProgress = Callable[[str, BatchProgress], None]


async def _one_pass(
    endpoint: Endpoint,
    question: str,
    requests: list[BatchRequest],
    answers_dir: Path | None,
    *,
    concurrency: int,
    order: str,
    on_progress: Callable[[BatchProgress], None] | None,
    priority: Priority = BATCH_PRIORITY,
    adaptive: bool = False,
) -> tuple[list[BatchResult], float]:
    """Every answer of one pass (those kept by an earlier run included), and the seconds it ran in all."""
    results = kept_answers(answers_dir, question) if answers_dir else []
    done = {result.custom_id for result in results}
    earlier_s = float(progress(answers_dir).get(question, {}).get("wall_s", 0.0)) if answers_dir else 0.0
    started = time.monotonic()
    with _keeping(answers_dir, question) as keep:

        def take(result: BatchResult) -> None:
            results.append(result)
            keep(result)

        try:
            await run_requests(
                endpoint,
                [request for request in requests if request.custom_id not in done],
                take,
                concurrency=concurrency,
                order=order,  # type: ignore[arg-type]
                on_progress=on_progress,
                priority=priority,
                adaptive=adaptive,
            )
        finally:  # Ctrl-C included: the seconds this pass ran and how far it got
            if answers_dir is not None:
                record_progress(
                    answers_dir,
                    question,
                    wall_s=earlier_s + time.monotonic() - started,
                    answered=len(results),
                    total=len(requests),
                )
    return results, earlier_s + time.monotonic() - started


@contextlib.contextmanager
def _keeping(answers_dir: Path | None, question: str) -> Iterator[Callable[[BatchResult], None]]:
    """Where each answer of a pass is kept as it comes (nowhere without ``answers_dir``)."""
    if answers_dir is None:
        yield lambda result: None
        return
    answers_dir.mkdir(parents=True, exist_ok=True)
    with JsonlSink(answers_file(answers_dir, question)) as sink:
        yield sink


def _for_pass(on_progress: PassProgress | None, name: str) -> Callable[[BatchProgress], None] | None:
    if on_progress is None:
        return None
    return lambda progress: on_progress(name, progress)


async def classify(
    endpoint: Endpoint,
    passages: list[Passage],
    *,
    temperature: float | None = None,
    order: str = "input",
    concurrency: int | None = None,
    on_progress: PassProgress | None = None,
    answers_dir: Path | None = None,
    priority: Priority = BATCH_PRIORITY,
) -> ClassificationReport:
    """Run both passes over ``passages`` and score pass 1 against the true authors.

    ``answers_dir``: every answer is kept there as it comes (workloads/answers.py), and the answers an earlier
    run kept there are not asked again: a run stopped by Ctrl-C or a failure goes on where it stopped.
    Batch work: its requests carry ``priority`` (low), and without a fixed ``concurrency`` it makes room for
    people's requests to the same endpoint (batch.pace).
    """
    answers: dict[str, list[BatchResult]] = {}
    reports: dict[str, PassReport] = {}
    for question in (AUTHOR, SETTING):
        requests = [answer_request(endpoint, passage, question, temperature) for passage in passages]
        results, wall_s = await _one_pass(
            endpoint,
            question.name,
            requests,
            answers_dir,
            concurrency=concurrency or min(len(passages), default_concurrency(endpoint)),
            order=order,
            on_progress=_for_pass(on_progress, question.name),
            priority=priority,
            adaptive=concurrency is None,
        )
        by_id = {result.custom_id: result for result in results}
        answers[question.name] = [by_id[request.custom_id] for request in requests]
        reports[question.name] = PassReport.of(question, wall_s, answers[question.name])
    return ClassificationReport(
        model=endpoint.model,
        engine=endpoint.engine,
        authors=list(dict.fromkeys(passage.author for passage in passages)),
        author_pass=reports["author"],
        setting_pass=reports["setting"],
        truths=[passage.author for passage in passages],
        author_answers=[parse_answer(result, "author") for result in answers["author"]],
        setting_answers=[parse_answer(result, "setting") for result in answers["setting"]],
        passage_ids=[passage.id for passage in passages],
    )


def summary_lines(report: ClassificationReport) -> list[str]:
    """The guide's summary, line for line."""
    first, second = report.author_pass, report.setting_pass
    n = len(report.truths)
    lines = [
        f"pass 1 - author: {n} passages in {first.wall_s:.1f}s",
        f"accuracy: {report.correct}/{n} ({100 * report.accuracy:.0f}%)",
        "per author: " + ", ".join(f"{a} {ok}/{total}" for a, (ok, total) in report.per_author().items()),
        *_token_lines(first, cached=False),
        "",
        f"pass 2 - setting: {n} passages in {second.wall_s:.1f}s ({report.speedup:.1f}x faster)",
    ]
    for side, books in report.leaning().items():
        lines.append(f"predominantly {side + ':':<9} " + ", ".join(f"{a} {k}/{m}" for a, k, m in books))
    lines += _token_lines(second, cached=True)
    return lines


def _token_lines(report: PassReport, *, cached: bool) -> list[str]:
    note = " including cache hits" if cached else ""
    lines = [
        f"in:  {report.input_tokens:,} tok ({report.input_tokens_per_s:,.0f} tok/s, "
        f"{report.input_m_tokens_per_hour:.1f}M/hour{note})",
        f"out: {report.output_tokens:,} tok ({report.output_tokens_per_s:,.0f} tok/s)",
    ]
    if cached:
        lines.append(f"cached: {report.cached_tokens:,}/{report.input_tokens:,} prompt tokens from cache")
    if report.failed:
        lines.append(f"errors: {report.failed} requests failed")
    return lines


__all__ = [
    "AUTHOR",
    "AUTHOR_QUESTION",
    "AUTHOR_SCHEMA",
    "SETTING",
    "SETTING_QUESTION",
    "SETTING_SCHEMA",
    "ClassificationReport",
    "PassReport",
    "answer_request",
    "classify",
    "parse_answer",
    "prompt",
    "summary_lines",
]
