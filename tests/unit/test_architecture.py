"""The house stays tidy: no import cycles anywhere in the package (lazy imports count), no giant modules."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

import sandserve

PACKAGE_DIR = Path(sandserve.__file__).parent
MAX_MODULE_LINES = 500


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_the_package_has_no_import_cycles() -> None:
    assert import_cycles(grimp.build_graph("sandserve")) == []


def test_a_new_cycle_is_caught() -> None:
    graph = grimp.build_graph("sandserve")
    graph.add_import(importer="sandserve.errors", imported="sandserve.serve.lifecycle")
    cycles = import_cycles(graph)
    assert cycles and "sandserve.errors" in cycles[0]


@pytest.mark.parametrize(
    "path", sorted(PACKAGE_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_DIR))
)
def test_no_module_is_a_giant(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines: split it at its seams"


#: Names only engines/ and providers/ may branch on.
ADAPTER_NAMES = {"sglang", "llamacpp", "local", "daytona", "gateway"}


def _name_branches(path: Path) -> list[int]:
    """Lines comparing something to an engine or provider name (``==``, ``!=``, ``in``, ``is``)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            # A fleet member's role ("gateway", "worker") is not a provider's name.
            about_a_role = any(
                (isinstance(side, ast.Attribute) and side.attr == "role")
                or (isinstance(side, ast.Name) and side.id == "role")
                for side in sides
            )
            if not about_a_role and any(_is_adapter_name(side) for side in sides):
                lines.append(node.lineno)
    return lines


def _is_adapter_name(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in ADAPTER_NAMES
    # ProviderName.LOCAL and the like
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ProviderName"
    )


def test_only_engines_and_providers_branch_on_their_names() -> None:
    found = {
        str(path.relative_to(PACKAGE_DIR)): lines
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if path.relative_to(PACKAGE_DIR).parts[0] not in ("engines", "providers")
        and (lines := _name_branches(path))
    }
    assert not found, f"engine/provider names compared outside engines/, providers/: {found}"


def test_the_name_check_catches_a_branch(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'def f(endpoint, spec):\n    x = endpoint.engine == "llamacpp"\n'
        "    return spec.provider is ProviderName.LOCAL\n"
    )
    assert _name_branches(sample) == [2, 3]
