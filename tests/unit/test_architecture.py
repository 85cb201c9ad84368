"""The house stays tidy: no import cycles anywhere in the package (lazy imports count), no giant modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
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


@pytest.fixture(autouse=True, scope="module")
def _forget_the_trees() -> Iterator[None]:
    """The parsed files are kept for this module's checks only (held longer, they slow every collection)."""
    yield
    _nodes.cache_clear()


@cache
def _nodes(path: Path) -> list[ast.AST]:
    """Every node of the file's syntax tree, parsed and walked once for all the checks below."""
    return list(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


#: Names only engines/ and providers/ may branch on.
ADAPTER_NAMES = {"sglang", "llamacpp", "local", "daytona", "gateway"}


def _name_branches(path: Path) -> list[int]:
    """Lines comparing something to an engine or provider name (``==``, ``!=``, ``in``, ``is``)."""
    lines = []
    for node in _nodes(path):
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


# --- adapter knowledge stays in its adapter -----------------------------------------------------------------

#: The Daytona SDK's packages: only providers/ may import them (lazy imports included).
DAYTONA_SDK = {"daytona", "daytona_api_client", "daytona_api_client_async", "daytona_toolbox_api_client"}
#: Routes every OpenAI-compatible server answers: the shared protocol, not one engine's.
OPENAI_ROUTES = {"/v1/models", "/v1/completions", "/v1/chat/completions"}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in _nodes(path):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def _sdk_imports(path: Path) -> list[int]:
    return [line for line, module in _imported_modules(path) if module.split(".")[0] in DAYTONA_SDK]


def _outside(*rooms: str) -> list[Path]:
    return [p for p in sorted(PACKAGE_DIR.rglob("*.py")) if p.relative_to(PACKAGE_DIR).parts[0] not in rooms]


def test_only_providers_import_the_daytona_sdk() -> None:
    found = {
        str(p.relative_to(PACKAGE_DIR)): lines for p in _outside("providers") if (lines := _sdk_imports(p))
    }
    assert not found, f"the daytona SDK imported outside providers/: {found}"


def test_the_sdk_check_catches_an_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json\n\ndef f():\n    from daytona_api_client import GpuType\n    import daytona\n"
    )
    assert _sdk_imports(sample) == [4, 5]


def engine_vocabulary() -> tuple[set[str], tuple[str, ...]]:
    """Each engine's own routes (readiness, server info, load, raw generation, tokenize, chat template) and
    its metric prefixes."""
    from sandserve.engines import ENGINE_NAMES, get_engine

    routes: set[str] = set()
    prefixes: set[str] = set()
    for engine in map(get_engine, ENGINE_NAMES):  # the built-in ones (a test may register its own)
        calls = [
            engine.generate_call("m", "text", None, {"max_new_tokens": 1}),
            engine.tokenize_call("text"),
            engine.template_call([{"role": "user", "content": "text"}]),
        ]
        routes |= {
            engine.readiness.path,
            engine.info_path,
            *([engine.load_route] if engine.load_route else []),
            *(call.path for call in calls if call is not None),
        }
        prefixes |= {name.split(":", 1)[0] + ":" for name in engine.metric_names.values()}
    return routes - OPENAI_ROUTES, tuple(sorted(prefixes))


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string in the code (f-strings' literal parts too), with its line; docstrings (a string standing
    alone as a statement: a module's, a function's, an attribute's) left out."""
    nodes = _nodes(path)
    docstrings = {
        id(node.value)
        for node in nodes
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in nodes
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def _engine_words(path: Path, routes: set[str], prefixes: tuple[str, ...]) -> list[int]:
    """Lines with a string (not a docstring) that is an engine's route or starts with its metric prefix."""
    return sorted(
        {line for line, text in _strings(path) if text.split("?")[0] in routes or text.startswith(prefixes)}
    )


def test_engine_routes_and_metric_names_stay_in_engines() -> None:
    routes, prefixes = engine_vocabulary()
    assert {"/health_generate", "/server_info", "/v1/loads", "/props", "/slots"} <= routes
    assert {"/generate", "/tokenize", "/apply-template"} <= routes
    assert prefixes == ("llamacpp:", "sglang:")
    found = {
        str(p.relative_to(PACKAGE_DIR)): lines
        for p in _outside("engines")
        if (lines := _engine_words(p, routes, prefixes))
    }
    assert not found, f"an engine's route or metric name outside engines/: {found}"


def test_the_engine_word_check_catches_a_route_and_a_metric(tmp_path: Path) -> None:
    routes, prefixes = engine_vocabulary()
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Reads /v1/loads (a docstring may say so)."""\n'
        'LOADS = "/v1/loads"\n'
        'RUNNING = f"sglang:num_running_reqs {1}"\n'
        'CHAT = "/v1/chat/completions"\n'
        'post(endpoint, "/tokenize", {"content": text})\n'
        'BATCH_URLS = ("/v1/completions", "/generate")\n'
    )
    assert _engine_words(sample, routes, prefixes) == [2, 3, 5, 6]


#: The headers of Daytona's preview proxy: only providers/ names them (an engine is told the one it checks, an
#: endpoint carries the ones its provider gave it).
DAYTONA_HEADERS = (
    "x-daytona-preview-token",
    "x-daytona-skip-preview-warning",
    "x-daytona-skip-last-activity-update",
)


def _daytona_headers(path: Path) -> list[int]:
    return sorted({line for line, text in _strings(path) if any(h in text.lower() for h in DAYTONA_HEADERS)})


def test_daytona_headers_stay_in_providers() -> None:
    found = {
        str(p.relative_to(PACKAGE_DIR)): lines
        for p in _outside("providers")
        if (lines := _daytona_headers(p))
    }
    assert not found, f"a Daytona header named outside providers/: {found}"


def test_the_header_check_catches_a_header(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Sends X-Daytona-Skip-Preview-Warning (a docstring may say so)."""\n'
        'TOKEN = "x-daytona-preview-token"\n'
        "hint = f\"curl -H 'X-Daytona-Preview-Token: {token}'\"\n"
        'PROBE = {"X-Daytona-Skip-Last-Activity-Update": "true"}\n'
        'PLAIN = "Authorization"\n'
    )
    assert _daytona_headers(sample) == [2, 3, 4]
