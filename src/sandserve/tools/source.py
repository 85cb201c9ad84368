"""The source of a tool that travels to where it runs (a restricted subprocess, a Daytona CPU sandbox).

It is the function's own source, plus: the modules it uses (imported at the top of its file), the Enums and
date types its parameters name (an Enum is rebuilt from its members, its methods left behind), pydantic's
``Field`` where a default uses it, and a wrapper that turns the top-level JSON arguments back into those
types, so the function gets what its signature says. Any other global name is refused when the tool is
declared, not when the model calls it.
"""

from __future__ import annotations

import ast
import datetime
import dis
import enum
import inspect
import textwrap
import types
import typing
from collections.abc import Callable
from typing import Any

from sandserve.errors import ToolDefinitionError


def self_contained_source(function: Callable[..., Any], hints: dict[str, Any]) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise ToolDefinitionError(
            function.__name__,
            "its source code cannot be read",
            hint="Define the tool in a .py file (not in an interactive session).",
        ) from exc
    lines = source.splitlines()
    if lines and lines[0].startswith("@"):  # decorators (such as @tool(paths=[...])) stay behind
        definition = ast.parse(source).body[0]
        lines = lines[definition.lineno - 1 :]
    carried = _CarriedTypes(function, hints)
    imports = [_import_line(name, value) for name, value in _globals_used(function, carried).items()]
    # Annotations stay unevaluated, so names used only in them (Literal, Optional) need no import.
    return (
        "\n".join(
            [
                "from __future__ import annotations",
                *imports,
                *carried.definitions(),
                "",
                *lines,
                *carried.rebuilding_wrapper(function.__name__),
            ]
        )
        + "\n"
    )


#: Classes whose values JSON carries as ISO text, rebuilt with ``fromisoformat`` before the tool runs.
_ISO_CLASSES = (datetime.datetime, datetime.date, datetime.time)


class _CarriedTypes:
    """The types a tool's parameters name that must exist where it runs: an Enum (rebuilt from its members,
    methods left behind), ``date``/``datetime``/``time``, pydantic's ``Field`` in a default. Arguments arrive
    there as JSON values; a wrapper turns the top-level ones back into these types (an Enum member, a date, a
    tuple) before the function is called, so the function gets what its signature says."""

    def __init__(self, function: Callable[..., Any], hints: dict[str, Any]) -> None:
        self.function = function
        self.hints = hints
        self.aliases: dict[Any, str] = {}
        for annotation in hints.values():
            for named in _named_types(annotation):
                if named not in self.aliases and (_is_enum(named) or named in _ISO_CLASSES):
                    self.aliases[named] = f"_sandserve_type_{len(self.aliases)}"

    def covers(self, value: Any) -> bool:
        """Whether the global ``value`` travels as one of these types (so the body may use it)."""
        return any(value is carried for carried in self.aliases)

    def definitions(self) -> list[str]:
        lines = []
        if any(_is_enum(carried) for carried in self.aliases):
            lines.append("import enum as _sandserve_enum")
        if any(carried in _ISO_CLASSES for carried in self.aliases):
            lines.append("import datetime as _sandserve_datetime")
        for carried, alias in self.aliases.items():
            lines.append(f"{alias} = {_definition(carried)}")
            lines += [f"{name} = {alias}" for name, value in self._globals() if value is carried]
        if self._defaults_use_pydantic_field():
            # Every argument is passed (validated, defaults filled in) so a default is never used where the
            # tool runs: pydantic's Field needs to exist there only so that the `def` line evaluates.
            from pydantic import Field

            lines.append("def _sandserve_field(default=None, *args, **kwargs):\n    return default")
            lines += [f"{name} = _sandserve_field" for name, value in self._globals() if value is Field]
        return lines

    def _globals(self) -> list[tuple[str, Any]]:
        return [(name, value) for name, value in self.function.__globals__.items() if name.isidentifier()]

    def rebuilding_wrapper(self, name: str) -> list[str]:
        conversions = []
        for parameter, annotation in self.hints.items():
            if parameter == "return":
                continue
            expression = self._rebuilt(annotation, f"arguments[{parameter!r}]")
            if expression is not None:
                conversions.append(
                    f"    if {parameter!r} in arguments:\n        arguments[{parameter!r}] = {expression}"
                )
        if not conversions:
            return []
        return [
            "",
            "",
            f"_sandserve_tool = {name}",
            "",
            "",
            f"def {name}(**arguments):",
            *conversions,
            "    return _sandserve_tool(**arguments)",
        ]

    def _rebuilt(self, annotation: Any, value: str) -> str | None:
        """An expression turning the JSON ``value`` into ``annotation``'s type; None when it already is."""
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            return self._rebuilt(args[0], value)
        if origin in (typing.Union, types.UnionType):
            members = [member for member in args if member is not type(None)]
            if len(members) != 1:
                return None
            inner = self._rebuilt(members[0], value)
            return None if inner is None else f"None if {value} is None else {inner}"
        if annotation in self.aliases:
            method = "" if _is_enum(annotation) else ".fromisoformat"
            return f"{self.aliases[annotation]}{method}({value})"
        if origin is tuple or annotation is tuple:
            return f"tuple({value})"
        return None

    def _defaults_use_pydantic_field(self) -> bool:
        from pydantic.fields import FieldInfo

        parameters = inspect.signature(self.function).parameters.values()
        return any(isinstance(parameter.default, FieldInfo) for parameter in parameters)


def _named_types(annotation: Any) -> list[Any]:
    """Every class an annotation names, inside ``Optional``, ``list[...]``, ``Annotated`` and the like."""
    found = [annotation] if isinstance(annotation, type) else []
    for arg in typing.get_args(annotation):
        found += _named_types(arg)
    return found


def _is_enum(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, enum.Enum)


def _definition(carried: Any) -> str:
    if carried in _ISO_CLASSES:
        return f"_sandserve_datetime.{carried.__name__}"
    base = (
        "StrEnum"
        if issubclass(carried, enum.StrEnum)
        else "IntEnum"
        if issubclass(carried, enum.IntEnum)
        else "Enum"
    )
    members = [(member.name, member.value) for member in carried]
    return f"_sandserve_enum.{base}({carried.__name__!r}, {members!r})"


def _globals_used(function: Callable[..., Any], carried: _CarriedTypes) -> dict[str, types.ModuleType]:
    modules: dict[str, types.ModuleType] = {}
    for name in sorted(_global_loads(function.__code__)):
        if name not in function.__globals__ or name == function.__name__:
            continue  # a builtin, or the function calling itself
        value = function.__globals__[name]
        if carried.covers(value):
            continue  # defined where the tool runs (an Enum of its parameters, date...)
        if not isinstance(value, types.ModuleType):
            raise ToolDefinitionError(
                function.__name__,
                f"it uses the global name {name!r}, which does not travel with it",
                hint="Tools run isolated from your program: define what they need inside the function "
                "(imports included).",
            )
        modules[name] = value
    return modules


def _global_loads(code: types.CodeType) -> set[str]:
    """Names the code reads as globals (attribute names, which share ``co_names``, are not among them)."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_loads(const)
    return names


def _import_line(name: str, module: types.ModuleType) -> str:
    full = module.__name__
    if full == name:
        return f"import {full}"
    if "." in full and full.rsplit(".", 1)[1] == name:
        return f"from {full.rsplit('.', 1)[0]} import {name}"
    return f"import {full} as {name}"
