"""The house stays tidy: no import cycles anywhere in the package (lazy imports count), no giant modules."""

from __future__ import annotations

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
