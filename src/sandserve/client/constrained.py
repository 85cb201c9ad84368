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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sandserve.client.transport import post_json
from sandserve.engines.gbnf import regex_to_gbnf
from sandserve.errors import AnswerCutShortError, ConfigError, ConstraintViolatedError, InvalidConstraintError
from sandserve.results import GenerateResult

if TYPE_CHECKING:
    from sandserve.endpoint import Endpoint

ConstraintKind = Literal["regex", "ebnf", "json_schema"]


@dataclass(frozen=True)
class Constraint:
    kind: ConstraintKind
    value: Any
    """The regex or grammar text, or the JSON schema (a dict)."""

    @property
    def label(self) -> str:
        return {"regex": "regex", "ebnf": "EBNF grammar", "json_schema": "JSON schema"}[self.kind]


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


def _is_llamacpp(endpoint: Endpoint) -> bool:
    return endpoint.engine == "llamacpp"


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
    elif _is_llamacpp(endpoint):
        params, extra = {}, {"grammar": _llamacpp_grammar(constraint)}
    else:
        params, extra = {}, {constraint.kind: constraint.value}
    if _is_llamacpp(endpoint):
        extra["chat_template_kwargs"] = {"enable_thinking": False}
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


def _llamacpp_grammar(constraint: Constraint) -> str:
    return regex_to_gbnf(constraint.value) if constraint.kind == "regex" else str(constraint.value)


def check_answer(
    constraint: Constraint | None, text: str, finish_reason: str, engine: str, max_tokens: int | None = None
) -> None:
    """A finished answer must match its regex or validate against its schema; a cut one is refused."""
    if constraint is None:
        return
    if finish_reason == "length":
        raise AnswerCutShortError(constraint.label, max_tokens, text)
    if constraint.kind == "regex" and re.fullmatch(constraint.value, text) is None:
        raise ConstraintViolatedError("regex", engine, text)
    if constraint.kind == "json_schema":
        import jsonschema

        try:
            jsonschema.validate(json.loads(text), constraint.value)
        except (ValueError, jsonschema.ValidationError) as exc:
            raise ConstraintViolatedError("JSON schema", engine, text) from exc


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
    if _is_llamacpp(endpoint):
        return _generate_llamacpp(endpoint, text, constraint, max_new_tokens, temperature, stop, timeout)
    return _generate_sglang(endpoint, text, constraint, max_new_tokens, temperature, stop, timeout)


def _generate_sglang(
    endpoint: Endpoint,
    text: str,
    constraint: Constraint | None,
    max_new_tokens: int,
    temperature: float | None,
    stop: str | list[str] | None,
    timeout: float,
) -> GenerateResult:
    sampling: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if temperature is not None:
        sampling["temperature"] = temperature
    if stop is not None:
        sampling["stop"] = stop
    if constraint is not None:
        # SGLang takes the schema as a JSON string inside sampling_params.
        value = json.dumps(constraint.value) if constraint.kind == "json_schema" else constraint.value
        sampling[constraint.kind] = value
    answer = post_json(endpoint, "/generate", {"text": text, "sampling_params": sampling}, timeout=timeout)
    meta = answer.get("meta_info") or {}
    finish = meta.get("finish_reason")
    finish_type = finish.get("type") if isinstance(finish, dict) else (finish or "stop")
    result = GenerateResult(
        text=answer.get("text", ""),
        finish_reason="length" if finish_type == "length" else str(finish_type),
        prompt_tokens=int(meta.get("prompt_tokens") or 0),
        completion_tokens=int(meta.get("completion_tokens") or 0),
        cached_tokens=int(meta.get("cached_tokens") or 0),
        raw=answer,
    )
    check_answer(constraint, result.text, result.finish_reason, endpoint.engine, max_new_tokens)
    return result


def _generate_llamacpp(
    endpoint: Endpoint,
    text: str,
    constraint: Constraint | None,
    max_new_tokens: int,
    temperature: float | None,
    stop: str | list[str] | None,
    timeout: float,
) -> GenerateResult:
    body: dict[str, Any] = {"model": endpoint.model, "prompt": text, "max_tokens": max_new_tokens}
    if temperature is not None:
        body["temperature"] = temperature
    if stop is not None:
        body["stop"] = stop
    if constraint is not None:
        if constraint.kind == "json_schema":
            body["json_schema"] = constraint.value
        else:
            body["grammar"] = _llamacpp_grammar(constraint)
    answer = post_json(endpoint, "/v1/completions", body, timeout=timeout)
    choice = (answer.get("choices") or [{}])[0]
    usage = answer.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    result = GenerateResult(
        text=choice.get("text") or "",
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        raw=answer,
    )
    check_answer(constraint, result.text, result.finish_reason, endpoint.engine, max_new_tokens)
    return result
