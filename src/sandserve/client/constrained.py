"""Constrained decoding on any engine: a regex, an EBNF grammar or a JSON schema, mapped honestly.

| constraint  | SGLang                                | llama.cpp                                            |
|-------------|---------------------------------------|------------------------------------------------------|
| regex       | ``regex`` (``/generate``, chat)       | compiled to a GBNF ``grammar`` (gbnf.py), or refused |
| EBNF        | ``ebnf``                              | its GBNF ``grammar`` (the same notation family)      |
| JSON schema | ``json_schema`` / ``response_format`` | ``json_schema`` / ``response_format``                |

Raw-text generation uses SGLang's native ``/generate`` and llama.cpp's ``/v1/completions``. A constraint is
never dropped: what an engine cannot enforce raises ``CapabilityError``. What comes back is checked before it
is handed back, on every engine: a finished regex answer must match it, a finished JSON-schema answer must
parse and validate (``ConstraintViolatedError`` otherwise), and an answer cut at ``max_tokens`` is only the
prefix of one, so it raises ``AnswerCutShortError`` (naming ``max_tokens``) instead of passing broken JSON on.
Constrained chat on llama.cpp also sends
``chat_template_kwargs.enable_thinking = false``: with thinking on, a grammar lets a ``<think>`` block come
first, and a small model can wander there until it runs out of tokens.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from sandserve.client.transport import post_json
from sandserve.client.usage import usage_of
from sandserve.engines import Engine, get_engine
from sandserve.errors import AnswerCutShortError, ConfigError, ConstraintViolatedError, InvalidConstraintError
from sandserve.results import Constraint, GenerateResult

if TYPE_CHECKING:
    from sandserve.endpoint import Endpoint


def pick_constraint(
    *, regex: str | None = None, ebnf: str | None = None, json_schema: dict[str, Any] | str | None = None
) -> Constraint | None:
    """The one constraint given (a JSON schema may come as text); None when there is none."""
    given = [
        (kind, value)
        for kind, value in (("regex", regex), ("ebnf", ebnf), ("json_schema", json_schema))
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(
            f"Only one constraint at a time: got {', '.join(kind for kind, _ in given)}.",
            hint="Pick one of regex, EBNF grammar or JSON schema.",
        )
    if not given:
        return None
    kind, value = given[0]
    if kind == "json_schema" and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidConstraintError("JSON schema", f"it is not JSON ({exc})") from exc
    return Constraint(kind, value)  # type: ignore[arg-type]


def _engine(endpoint: Endpoint) -> Engine:
    return get_engine(endpoint.engine)


# --- chat completions ---------------------------------------------------------------------------------------


def chat_constraint_params(endpoint: Endpoint, constraint: Constraint | None) -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create`` enforcing ``constraint`` on this endpoint's engine.

    Engine-specific fields go in ``extra_body`` (the OpenAI SDK's way to send fields it does not know)."""
    if constraint is None:
        return {}
    if constraint.kind == "json_schema":
        params: dict[str, Any] = {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": constraint.value},
            }
        }
        extra: dict[str, Any] = {}
    else:
        params, extra = {}, _engine(endpoint).constraint_fields(constraint)
    extra.update(_engine(endpoint).constrained_chat_fields())
    if extra:
        params["extra_body"] = extra
    return params


def check_chat_output(
    endpoint: Endpoint,
    constraint: Constraint | None,
    text: str | None,
    finish_reason: str | None,
    max_tokens: int | None = None,
) -> None:
    """Refuse a constrained answer that was cut at ``max_tokens`` or that escaped its constraint."""
    check_answer(constraint, text or "", finish_reason or "stop", endpoint.engine, max_tokens)


def check_answer(
    constraint: Constraint | None, text: str, finish_reason: str, engine: str, max_tokens: int | None = None
) -> None:
    """A finished answer must match its regex or validate against its schema. An answer that reached
    ``max_tokens`` counts only if it already satisfies its constraint (the limit can fall on the last token
    of a complete answer); otherwise it is a cut one and is refused as such."""
    if constraint is None:
        return
    if constraint.kind == "ebnf":  # no grammar checker on this side: the server's word (and the limit) decide
        if finish_reason == "length":
            raise AnswerCutShortError(constraint.label, max_tokens, text)
        return
    problem = _constraint_problem(constraint, text)
    if problem is None:
        return
    if finish_reason == "length":
        raise AnswerCutShortError(constraint.label, max_tokens, text)
    raise ConstraintViolatedError(constraint.label, engine, text) from problem


def _constraint_problem(constraint: Constraint, text: str) -> Exception | None:
    if constraint.kind == "regex":
        return None if re.fullmatch(constraint.value, text) else ValueError("no full match")
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), constraint.value)
    except (ValueError, jsonschema.ValidationError) as exc:
        return exc
    return None


# --- raw-text generation ------------------------------------------------------------------------------------


def generate(
    endpoint: Endpoint,
    text: str,
    constraint: Constraint | None,
    *,
    max_new_tokens: int = 128,
    temperature: float | None = None,
    stop: str | list[str] | None = None,
    timeout: float = 120.0,
) -> GenerateResult:
    """Continue ``text`` (no chat template) under ``constraint``: SGLang's /generate, else completions."""
    sampling: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if temperature is not None:
        sampling["temperature"] = temperature
    if stop is not None:
        sampling["stop"] = stop
    engine = _engine(endpoint)
    call = engine.generate_call(endpoint.model, text, constraint, sampling)
    answer = post_json(endpoint, call.path, call.body, timeout=timeout)
    text, finish_reason = engine.read_generation(answer)
    usage = usage_of(answer)
    result = GenerateResult(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        raw=answer,
    )
    check_answer(constraint, result.text, result.finish_reason, endpoint.engine, max_new_tokens)
    return result
