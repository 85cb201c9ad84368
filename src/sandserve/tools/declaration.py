"""Tools declared as typed Python functions: the JSON schema a model sees comes from signature and docstring.

    @tool
    def get_weather(city: str) -> str:
        \"\"\"Get the current weather for a city.

        Args:
            city: The city's name, e.g. "Lisbon".
        \"\"\"

A tool runs isolated (toolsandbox.py): in a subprocess or a Daytona CPU sandbox, from its own source. So it
must be self-contained: imports inside the function, or modules imported at the top of its file (those are
carried over); other global names are refused when the tool is declared, not when the model calls it.
"""

from __future__ import annotations

import dis
import inspect
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandserve.errors import ToolDefinitionError

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""
    source: str
    """Self-contained Python source defining the function ``name`` (imports it needs included)."""
    function: Callable[..., Any]

    def spec(self) -> dict[str, Any]:
        """The entry for the OpenAI ``tools`` list."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}


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
    return Tool(
        name=name,
        description=summary or name.replace("_", " "),
        parameters=_parameters_schema(function, arg_docs),
        source=_self_contained_source(function),
        function=function,
    )


def tool_specs(tools: list[Tool]) -> list[dict[str, Any]]:
    return [t.spec() for t in tools]


# --- schema from the signature ------------------------------------------------------------------------------


def _parameters_schema(function: Callable[..., Any], arg_docs: dict[str, str]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(
            function.__name__,
            f"its type hints cannot be resolved ({exc})",
            hint="Use plain types (str, int, float, bool, list[...], Literal[...]).",
        ) from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
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
        schema = _schema_of(hints[parameter.name], function.__name__)
        if parameter.name in arg_docs:
            schema = {**schema, "description": arg_docs[parameter.name]}
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        properties[parameter.name] = schema
    return {"type": "object", "properties": properties, "required": required}


def _schema_of(annotation: Any, tool_name: str) -> dict[str, Any]:
    if annotation in _SCALARS:
        return dict(_SCALARS[annotation])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _schema_of(args[0], tool_name)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]: the default covers the None case
            return _schema_of(members[0], tool_name)
        return {"anyOf": [_schema_of(a, tool_name) for a in args]}
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset):
        items = args[0] if args else None
        if items in (None, Ellipsis):
            return {"type": "array"}
        return {"type": "array", "items": _schema_of(items, tool_name)}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    raise ToolDefinitionError(
        tool_name,
        f"the annotation {annotation!r} has no JSON schema equivalent",
        hint="Use str, int, float, bool, list[...], dict, Literal[...] or Optional[...].",
    )


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


def _self_contained_source(function: Callable[..., Any]) -> str:
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
    imports = [_import_line(name, value) for name, value in _globals_used(function).items()]
    # Annotations stay unevaluated, so names used only in them (Literal, Optional) need no import.
    return "\n".join(["from __future__ import annotations", *imports, "", *lines]) + "\n"


def _globals_used(function: Callable[..., Any]) -> dict[str, types.ModuleType]:
    modules: dict[str, types.ModuleType] = {}
    for name in sorted(_global_loads(function.__code__)):
        if name not in function.__globals__ or name == function.__name__:
            continue  # a builtin, or the function calling itself
        value = function.__globals__[name]
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
