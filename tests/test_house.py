"""The house drawn from its own imports: no circle, core never reaches up, no import hidden in a function.

Reads every module under core/ and views/ with ast (nothing is imported), so a change that adds a
circle, or dodges one with an import inside a function, fails here rather than in a review.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "views")
# Heavy or optional libraries that a module may load on first use, so importing it stays cheap;
# these are not project modules and cannot close a circle.
LAZY_LIBRARIES = {"duckdb", "pyarrow", "wordllama", "openai", "duckdb_extension_postgres", "psycopg", "numpy"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _targets(node: ast.AST, here: str, is_package: bool) -> list[str]:
    """The modules one import statement names, resolved to absolute dotted names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = here.split(".") if is_package else here.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    # "from core import chat" names the module core.chat when it exists, else the package core.
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import in one module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # typing-only imports never run
            for target in _targets(child, name, path.name == "__init__.py"):
                found.append((target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _project(target: str) -> str | None:
    """The project module an import refers to (a package's __init__ counts), or None for a library."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name in MODULES:
        edges = {_project(target) for target, _, _ in _imports(name)}
        edges.discard(None)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return groups


def test_the_house_is_read():
    # The checks below mean nothing if the walk finds no modules or no imports.
    assert {"core.chat", "core.store", "core.store.migrations", "views.common"} <= set(MODULES)
    assert "core.store.base" in _graph()["core.store.migrations"]


def test_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_imports_form_no_circle():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] == "core"))
def test_core_never_imports_streamlit_or_views(name):
    reached_up = [
        f"line {line}: {target}"
        for target, line, _ in _imports(name)
        if target.split(".")[0] in {"streamlit", "views", "app"}
    ]
    assert reached_up == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_hides_in_a_function(name):
    hidden = [
        f"line {line}: {target}"
        for target, line, in_function in _imports(name)
        if in_function and target.split(".")[0] not in LAZY_LIBRARIES
    ]
    assert hidden == []


def test_migrations_import_only_the_storage_interface():
    # A migration is frozen: it carries its own copy of any rule it applies (STYLE 16).
    project = {_project(target) for target, _, _ in _imports("core.store.migrations")} - {None}
    assert project <= {"core.store.base"}


MODULE_LINES = 300  # past this a module usually holds several jobs (STYLE 15)
ON_PURPOSE = "Over 300 lines on purpose"  # how a module that stays longer says why, at its top


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_says_its_one_job_and_stays_short_or_says_why(name):
    text = MODULES[name].read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(text)) or ""
    if MODULES[name].name != "__init__.py" or text.strip():
        assert docstring.strip(), "the first line says the module's one job"
    if len(text.splitlines()) > MODULE_LINES:
        assert ON_PURPOSE in docstring, f"{len(text.splitlines())} lines and no reason written at the top"
