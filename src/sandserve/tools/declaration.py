"""Tools declared as typed Python functions: the JSON schema a model sees comes from signature and docstring.

    @tool
    def get_weather(city: str) -> str:
        \"\"\"Get the current weather for a city.

        Args:
            city: The city's name, e.g. "Lisbon".
        \"\"\"

The schema comes from pydantic (a model built over the signature), so Enum, date/datetime, Optional, tuple,
dict, nested pydantic models and ``Annotated[T, Field(description=...)]`` all work; a docstring's ``Args:``
describe the parameters that have no ``Field`` description. The arguments a model sends are validated against
that model before the tool runs (``Tool.check_arguments``): a wrong call goes back to the model as an error it
can correct.

A tool runs isolated (tools/sandboxes.py): in a subprocess or a Daytona CPU sandbox, from its own source. So
it must be self-contained: imports inside the function, or modules imported at the top of its file (those are
carried over); other global names are refused when the tool is declared, not when the model calls it. The
Enums and date types its parameters name travel with it, and its top-level arguments are rebuilt as those
types there; inside lists and dicts, values stay as JSON (an Enum's value, a date's ISO text).
"""

from __future__ import annotations

import datetime
import dis
import enum
import inspect
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandserve.errors import ToolDefinitionError

if typing.TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""
    source: str
    """Self-contained Python source defining the function ``name`` (imports it needs included)."""
    function: Callable[..., Any]
    arguments_model: type[BaseModel] | None = field(default=None, compare=False, repr=False)
    """The pydantic model of the arguments (from the signature); ``check_arguments`` validates with it."""

    def spec(self) -> dict[str, Any]:
        """The entry for the OpenAI ``tools`` list."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}

    def check_arguments(self, arguments: Any) -> dict[str, Any]:
        """The arguments a model sent, validated against the schema, as JSON values with defaults filled in.

        Raises ``ToolArgumentsError``, whose text says what is wrong in words a model can act on.
        """
        from pydantic import ValidationError

        if self.arguments_model is None:
            return dict(arguments)
        try:
            validated = self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, exc) from None
        return validated.model_dump(mode="json")


class ToolArgumentsError(ValueError):
    """A model's arguments do not fit the tool's schema. Not a ``SandserveError``: the loop hands its text
    back to the model as the tool's answer, so the model can correct the call."""

    def __init__(self, tool_name: str, error: Any) -> None:
        problems = []
        for item in error.errors(include_url=False):
            where = ".".join(str(part) for part in item["loc"]) or "the arguments"
            problems.append(f"{where}: {item['msg']}")
        super().__init__(f"error: the arguments do not fit {tool_name}'s schema: " + "; ".join(problems))


def tool(function: Callable[..., Any]) -> Tool:
    """Declare ``function`` as a tool (usable as a decorator)."""
    if isinstance(function, Tool):
        return function
    name = function.__name__
    if not inspect.isfunction(function) or name == "<lambda>":
        raise ToolDefinitionError(
            repr(function),
            "it is not a plain `def` function",
            hint="Write the tool as a module-level `def` with typed parameters.",
        )
    summary, arg_docs = _parse_docstring(inspect.getdoc(function) or "")
    hints = _type_hints(function)
    model = _arguments_model(function, hints)
    return Tool(
        name=name,
        description=summary or name.replace("_", " "),
        parameters=_parameters_schema(model, arg_docs, function.__name__),
        source=_self_contained_source(function, hints),
        function=function,
        arguments_model=model,
    )


def tool_specs(tools: list[Tool]) -> list[dict[str, Any]]:
    return [t.spec() for t in tools]


# --- schema from the signature, by pydantic -----------------------------------------------------------------


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(
            function.__name__,
            f"its type hints cannot be resolved ({exc})",
            hint="Use types importable where the function is defined (str, int, list[...], Literal[...], "
            "an Enum, date...).",
        ) from exc


def _arguments_model(function: Callable[..., Any], hints: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model with one field per parameter: its annotation, its default, its ``Field(...)``."""
    from pydantic import ConfigDict, PydanticSchemaGenerationError, create_model

    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            raise ToolDefinitionError(
                function.__name__,
                f"parameter {parameter.name!r} is not a plain keyword",
                hint="Models pass arguments by name: use ordinary named parameters.",
            )
        if parameter.name not in hints:
            raise ToolDefinitionError(
                function.__name__,
                f"parameter {parameter.name!r} has no type annotation",
                hint="Annotate every parameter: its JSON schema comes from the annotation.",
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    try:
        model = create_model(
            f"{function.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        model.model_json_schema()
    except (PydanticSchemaGenerationError, TypeError, ValueError) as exc:
        raise ToolDefinitionError(
            function.__name__,
            f"an annotation has no JSON schema equivalent ({str(exc).splitlines()[0]})",
            hint="Use str, int, float, bool, list[...], tuple[...], dict[str, ...], Literal[...], an Enum, "
            "date/datetime, Optional[...] or a pydantic model.",
        ) from exc
    return typing.cast("type[BaseModel]", model)


def _parameters_schema(model: type[BaseModel], arg_docs: dict[str, str], tool_name: str) -> dict[str, Any]:
    """The model's JSON schema, flat (``$ref`` inlined, no titles), with docstring descriptions filled in."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    flat = _inline(schema, definitions, tool_name, seen=())
    for name, text in arg_docs.items():
        prop = flat.get("properties", {}).get(name)
        if prop is not None and "description" not in prop:
            prop["description"] = text
    flat.setdefault("required", [])
    flat.pop("additionalProperties", None)
    return flat


def _inline(node: Any, definitions: dict[str, Any], tool_name: str, seen: tuple[str, ...]) -> Any:
    """``node`` with every ``$ref`` replaced by its definition and pydantic's ``title`` keys dropped (a model
    reads the property names; small schemas are what every engine's grammar compiler handles)."""
    if isinstance(node, list):
        return [_inline(item, definitions, tool_name, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            raise ToolDefinitionError(
                tool_name,
                f"the type {name} refers to itself",
                hint="Tool arguments must be finite JSON: use a type without recursion.",
            )
        target = _inline(definitions[name], definitions, tool_name, (*seen, name))
        extra = {key: value for key, value in node.items() if key != "$ref"}
        return {**target, **_inline(extra, definitions, tool_name, seen)}
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "patternProperties") and isinstance(value, dict):
            result[key] = {
                name: _inline(child, definitions, tool_name, seen) for name, child in value.items()
            }
        elif key in ("default", "enum", "const", "examples"):
            result[key] = value  # values, not schemas
        else:
            result[key] = _inline(value, definitions, tool_name, seen)
    return result


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and parameter descriptions from a Google-style ``Args:`` section."""
    paragraphs = doc.split("\n\n")
    summary = " ".join(paragraphs[0].split()) if paragraphs and not paragraphs[0].startswith("Args:") else ""
    arg_docs: dict[str, str] = {}
    current = None
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if not in_args:
            continue
        if stripped and not line.startswith((" ", "\t")):
            break  # the next section
        if ":" in stripped and stripped.split(":", 1)[0].split(" (")[0].isidentifier():
            name, text = stripped.split(":", 1)
            current = name.split(" (")[0]
            arg_docs[current] = text.strip()
        elif current and stripped:
            arg_docs[current] += " " + stripped
    return summary, arg_docs


# --- the source that travels --------------------------------------------------------------------------------


def _self_contained_source(function: Callable[..., Any], hints: dict[str, Any]) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise ToolDefinitionError(
            function.__name__,
            "its source code cannot be read",
            hint="Define the tool in a .py file (not in an interactive session).",
        ) from exc
    lines = source.splitlines()
    while lines and lines[0].startswith("@"):  # decorators (such as @tool) stay behind
        lines.pop(0)
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
