"""Every request the SGLang stand-in takes and every answer it gives, checked by SGLang's own pydantic models
(``sglang_protocol``: the real wheel's ``protocol.py`` files).

A request those models refuse gets what SGLang's server answers: its FastAPI body validation becomes a 400
``ErrorResponse`` whose message is the list of pydantic errors with ``body`` in front of each location
(``http_server.validation_exception_handler``; the nested ``{"error": {...}}`` envelope on ``/v1/responses``).
An answer the models refuse is a fault of the stand-in itself: it raises, so the test that caused it fails.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .sglang_state import BadRequest

Model = TypeVar("Model", bound=BaseModel)


def fastapi_errors(error: ValidationError) -> str:
    """``str(exc.errors())`` of the RequestValidationError FastAPI raises for a body."""
    found = []
    for item in error.errors(include_url=False):
        entry: dict[str, Any] = {
            "type": item["type"],
            "loc": ("body", *item["loc"]),
            "msg": item["msg"],
            "input": item["input"],
        }
        if "ctx" in item:
            entry["ctx"] = item["ctx"]
        found.append(entry)
    return str(found)


def checked_request(model: type[Model], body: Any) -> Model:
    """The request as SGLang's model reads it, or BadRequest with SGLang's validation message."""
    if not isinstance(body, dict):
        body_error = [
            {
                "type": "model_attributes_type",
                "loc": ("body",),
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": body,
            }
        ]
        raise BadRequest(str(body_error), "Bad Request")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise BadRequest(fastapi_errors(e), "Bad Request") from e


def checked_answer(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` unchanged once SGLang's model accepts it; a stand-in bug (AssertionError) otherwise."""
    try:
        model.model_validate(data)
    except ValidationError as e:
        raise AssertionError(f"the SGLang stand-in wrote a {model.__name__} SGLang would not: {e}") from e
    return data
