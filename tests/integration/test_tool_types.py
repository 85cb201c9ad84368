"""A typed tool in the real local sandbox (a separate, restricted Python process): the arguments a model sends
are validated, and the tool gets the types its signature names (an Enum member, a date, a tuple)."""

from __future__ import annotations

import enum
from datetime import date
from typing import Annotated

from pydantic import Field

from sandserve.tools.declaration import tool
from sandserve.tools.sandboxes import LocalToolSandbox


class Unit(enum.StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def plan_trip(
    city: Annotated[str, Field(description="Where to.")],
    day: date,
    unit: Unit = Unit.CELSIUS,
    span: tuple[int, int] = (9, 17),
) -> dict:
    """Plan a day out."""
    return {
        "city": city,
        "weekday": day.strftime("%A"),
        "unit": unit.name,
        "is_member": isinstance(unit, Unit),
        "hours": span[1] - span[0],
        "span_is_tuple": isinstance(span, tuple),
    }


def test_a_typed_tool_gets_its_types_in_the_sandbox():
    declared = tool(plan_trip)
    arguments = declared.check_arguments({"city": "Lisbon", "day": "2026-12-05", "unit": "fahrenheit"})
    outcome = LocalToolSandbox(timeout=10).run(declared, arguments)
    assert outcome.ok, outcome.content
    assert outcome.content == (
        '{"city": "Lisbon", "weekday": "Saturday", "unit": "FAHRENHEIT", "is_member": true, "hours": 8, '
        '"span_is_tuple": true}'
    )
