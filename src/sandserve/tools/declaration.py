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

A tool runs isolated (tools/sandboxes.py): in a subprocess or a Daytona CPU sandbox, from its own source
(tools/source.py). So it must be self-contained: imports inside the function, or modules imported at the top
of its file (those are carried over); other global names are refused when the tool is declared. The Enums and
date types its parameters name travel with it, and its top-level arguments are rebuilt as those types there;
inside lists and dicts, values stay as JSON (an Enum's value, a date's ISO text).
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandserve.errors import ToolDefinitionError
from sandserve.tools.source import self_contained_source

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
    paths: tuple[str, ...] = ()
    """Files or folders of this machine the tool may read (read-only); it sees no other user data."""

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


@typing.overload
def tool(function: Callable[..., Any], *, paths: Sequence[str | os.PathLike[str]] = ()) -> Tool: ...
@typing.overload
def tool(*, paths: Sequence[str | os.PathLike[str]] = ()) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    function: Callable[..., Any] | None = None, *, paths: Sequence[str | os.PathLike[str]] = ()
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare ``function`` as a tool (usable as a decorator: ``@tool`` or ``@tool(paths=[...])``).

    A tool sees none of this machine's user data (the working directory, home, /srv, /opt...); ``paths``
    names the files or folders it may read, shown to it read-only at the same place."""
    if function is None:
        return lambda function: tool(function, paths=paths)
    if isinstance(function, Tool):
        return function
    declared = _declared_paths(function, paths)
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
        source=self_contained_source(function, hints),
        function=function,
        arguments_model=model,
        paths=declared,
    )


def _declared_paths(function: Callable[..., Any], paths: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    declared = []
    for path in paths:
        text = os.fspath(path)
        if not os.path.isabs(text):
            raise ToolDefinitionError(
                getattr(function, "__name__", repr(function)),
                f"the path {text!r} it declares is relative",
                hint="Declare absolute paths (a tool runs in a folder of its own, not here): "
                "os.path.abspath(...) or Path(...).resolve().",
            )
        declared.append(os.path.normpath(text))
    return tuple(dict.fromkeys(declared))


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
    flat: dict[str, Any] = _inline(schema, definitions, tool_name, seen=())
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
