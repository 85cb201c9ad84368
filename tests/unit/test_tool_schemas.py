"""Tool schemas come from pydantic over the signature; a model's arguments are validated before a tool runs.

The travelling source is executed here in a fresh namespace (what the sandboxes do in their own process), so
the types a tool receives are checked without starting one.
"""

from __future__ import annotations

import datetime
import enum
import json
from datetime import date
from types import SimpleNamespace
from typing import Annotated, Any, Literal, Optional

import jsonschema
import pytest
from pydantic import BaseModel, Field

from sandserve.errors import ToolDefinitionError
from sandserve.tools.declaration import Tool, ToolArgumentsError, tool
from sandserve.tools.loop import _execute
from sandserve.tools.sandboxes import ToolOutcome


class Unit(enum.StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Place(BaseModel):
    city: str
    country: str = "PT"


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


def with_enum(unit: Unit, level: Level = Level.LOW) -> str:
    """Uses enums."""
    return f"{unit.name}/{level.name}/{Unit.FAHRENHEIT.value}"


def with_dates(day: date, at: datetime.datetime | None = None) -> str:
    """Uses dates."""
    return f"{day.weekday()} {type(day).__name__} {at.hour if at else '-'}"


def with_optional(city: str, days: Optional[int] = None) -> dict[str, Any]:  # noqa: UP045 - the old spelling
    """Optional, the old spelling."""
    return {"city": city, "days": days}


def with_tuples(span: tuple[int, int], tags: tuple[str, ...] = ()) -> str:
    """Uses tuples."""
    return f"{type(span).__name__} {span[0] + span[1]} {len(tags)}"


def with_dict(weights: dict[str, float], anything: dict = {}) -> float:  # noqa: B006 - never mutated
    """Uses dicts."""
    return sum(weights.values())


def with_descriptions(
    city: Annotated[str, Field(description="Where, from Field.")],
    hours: int = Field(3, description="How long, from a Field default."),
    mode: Literal["fast", "slow"] = "fast",
) -> str:
    """Descriptions from every place.

    Args:
        city: Overridden by the Field description.
        mode: From the docstring.
    """
    return f"{city} {hours} {mode}"


def with_model(place: Place) -> str:
    """A nested pydantic model."""
    return place["city"]


def recursive(tree: Tree) -> int:
    """Refers to itself."""
    return 0


class Opaque:
    pass


def opaque(thing: Opaque) -> str:
    """A type with no JSON form."""
    return "x"


def run_source(declared: Tool, arguments: dict[str, Any]) -> Any:
    """Run the travelling source as a sandbox does: exec it alone, call the function with JSON arguments."""
    namespace: dict[str, Any] = {}
    exec(compile(declared.source, f"<{declared.name}>", "exec"), namespace)
    return namespace[declared.name](**json.loads(json.dumps(arguments)))


def properties(declared: Tool) -> dict[str, Any]:
    return declared.parameters["properties"]


# --- schemas ------------------------------------------------------------------------------------------------


def test_an_enum_is_its_values_inline():
    declared = tool(with_enum)
    assert properties(declared)["unit"] == {"enum": ["celsius", "fahrenheit"], "type": "string"}
    assert properties(declared)["level"] == {"enum": [1, 2], "type": "integer", "default": 1}
    assert "$defs" not in json.dumps(declared.parameters) and "$ref" not in json.dumps(declared.parameters)
    assert declared.parameters["required"] == ["unit"]


def test_dates_are_strings_with_a_format():
    schema = properties(tool(with_dates))
    assert schema["day"] == {"type": "string", "format": "date"}
    assert schema["at"]["anyOf"] == [{"type": "string", "format": "date-time"}, {"type": "null"}]


def test_optional_allows_null_and_is_not_required():
    declared = tool(with_optional)
    assert properties(declared)["days"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert declared.parameters["required"] == ["city"]


def test_tuples_are_arrays_of_fixed_or_any_length():
    schema = properties(tool(with_tuples))
    assert schema["span"] == {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "integer"}],
        "minItems": 2,
        "maxItems": 2,
    }
    assert schema["tags"] == {"type": "array", "items": {"type": "string"}, "default": []}


def test_dicts_are_objects_with_typed_values():
    schema = properties(tool(with_dict))
    assert schema["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert schema["anything"]["type"] == "object"


def test_descriptions_come_from_field_then_the_docstring():
    declared = tool(with_descriptions)
    schema = properties(declared)
    assert schema["city"]["description"] == "Where, from Field."
    assert schema["hours"] == {
        "type": "integer",
        "default": 3,
        "description": "How long, from a Field default.",
    }
    assert schema["mode"]["description"] == "From the docstring."
    assert declared.description == "Descriptions from every place."


def test_a_nested_model_is_inlined_without_titles():
    schema = properties(tool(with_model))["place"]
    assert schema == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string", "default": "PT"}},
        "required": ["city"],
    }


def test_every_schema_is_valid_json_schema():
    functions = (with_enum, with_dates, with_optional, with_tuples, with_dict, with_descriptions, with_model)
    for function in functions:
        jsonschema.Draft202012Validator.check_schema(tool(function).parameters)


def test_types_without_a_json_form_are_refused_when_declared():
    with pytest.raises(ToolDefinitionError, match="no JSON schema equivalent"):
        tool(opaque)
    with pytest.raises(ToolDefinitionError, match="refers to itself"):
        tool(recursive)


# --- validating what a model sends --------------------------------------------------------------------------


def test_valid_arguments_come_back_as_json_with_defaults():
    checked = tool(with_enum).check_arguments({"unit": "fahrenheit"})
    assert checked == {"unit": "fahrenheit", "level": 1}
    checked = tool(with_dates).check_arguments({"day": "2026-12-02"})
    assert checked == {"day": "2026-12-02", "at": None}


@pytest.mark.parametrize(
    ("function", "arguments", "problem"),
    [
        (with_enum, {"unit": "kelvin"}, "unit: Input should be 'celsius' or 'fahrenheit'"),
        (with_dates, {"day": "next tuesday"}, "day: Input should be a valid date"),
        (with_optional, {}, "city: Field required"),
        (with_optional, {"city": "Lisbon", "town": "Porto"}, "town: Extra inputs are not permitted"),
        (with_tuples, {"span": [1, 2, 3]}, "span: Tuple should have at most 2 items"),
        (with_dict, {"weights": {"a": "heavy"}}, "weights.a: Input should be a valid number"),
        (with_model, {"place": {"country": "PT"}}, "place.city: Field required"),
    ],
)
def test_invalid_arguments_say_what_is_wrong(function: Any, arguments: dict[str, Any], problem: str):
    with pytest.raises(ToolArgumentsError) as caught:
        tool(function).check_arguments(arguments)
    assert str(caught.value).startswith(f"error: the arguments do not fit {function.__name__}'s schema: ")
    assert problem in str(caught.value)


class RecordingRunner:
    """Runs a tool's travelling source in this process and records every call it was asked to make."""

    isolation = "in-process (unit tests)"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run(self, declared: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls.append((declared.name, arguments))
        return ToolOutcome.success(run_source(declared, arguments))


def call(name: str, arguments: str) -> SimpleNamespace:
    return SimpleNamespace(function=SimpleNamespace(name=name, arguments=arguments))


def test_the_loop_refuses_bad_arguments_before_the_tool_runs():
    runner = RecordingRunner()
    tools = {"with_enum": tool(with_enum)}
    record = _execute(call("with_enum", '{"unit": "kelvin"}'), tools, runner)  # type: ignore[arg-type]
    assert not record.ok and "unit: Input should be 'celsius' or 'fahrenheit'" in record.result
    assert runner.calls == []
    record = _execute(call("with_enum", '{"unit": "celsius"}'), tools, runner)  # type: ignore[arg-type]
    assert record.ok and record.result == "CELSIUS/LOW/fahrenheit"
    assert runner.calls == [("with_enum", {"unit": "celsius", "level": 1})]


# --- what the tool receives where it runs -------------------------------------------------------------------


def test_an_enum_parameter_arrives_as_a_member():
    declared = tool(with_enum)
    assert run_source(declared, declared.check_arguments({"unit": "fahrenheit", "level": 2})) == (
        "FAHRENHEIT/HIGH/fahrenheit"
    )


def test_dates_arrive_as_dates():
    declared = tool(with_dates)
    checked = declared.check_arguments({"day": "2026-12-02", "at": "2026-12-02T15:30:00"})
    assert run_source(declared, checked) == "2 date 15"
    assert run_source(declared, declared.check_arguments({"day": "2026-12-07"})) == "0 date -"


def test_tuples_arrive_as_tuples():
    declared = tool(with_tuples)
    assert run_source(declared, declared.check_arguments({"span": [2, 3]})) == "tuple 5 0"


def test_field_defaults_and_annotations_travel():
    declared = tool(with_descriptions)
    assert run_source(declared, declared.check_arguments({"city": "Lisbon"})) == "Lisbon 3 fast"
    assert "pydantic" not in declared.source  # the sandbox needs no pydantic


def test_the_source_carries_no_more_than_it_needs():
    plain = tool(with_optional)
    assert "_sandserve" not in plain.source  # no types to carry, no wrapper


@tool(
    paths=[
        "/srv/corpus",
        "/srv/corpus/",
    ]
)
def reads_the_corpus(name: str) -> str:
    """Reads one text of the corpus."""
    return name


def test_declared_paths_are_part_of_the_declaration():
    assert reads_the_corpus.paths == ("/srv/corpus",)
    assert "paths=('/srv/corpus',)" in repr(reads_the_corpus)  # shown with the tool
    assert "paths=" not in reads_the_corpus.source and "@tool" not in reads_the_corpus.source
    assert run_source(reads_the_corpus, {"name": "x"}) == "x"
    assert tool(with_optional).paths == ()


def test_a_relative_declared_path_is_refused():
    with pytest.raises(ToolDefinitionError, match="relative") as refused:
        tool(with_optional, paths=["data"])
    assert "absolute" in (refused.value.hint or "")
