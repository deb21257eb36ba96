"""The package's layout rules, read from the source with `ast` (nothing is imported): no import circle between
bertcli's modules, and the pipelines reach the task families only through their interface (issue 29)."""

from __future__ import annotations

import ast
from pathlib import Path

import bertcli

ROOT = Path(bertcli.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The bertcli modules `name` imports anywhere in its file (function bodies and TYPE_CHECKING blocks too),
    with the packages whose __init__ such an import runs first."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the module, and every package above it
                found = ".".join(parts[:i])
                if found in modules and found != name and not name.startswith(found + "."):
                    out.add(found)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_of_the_package_imports_itself_through_others():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 50 and sum(map(len, graph.values())) > 200  # the walk found the package and its imports
    assert _cycles(graph) == []


def test_a_circle_is_found_where_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_pipelines_reach_task_families_only_through_their_interface():
    modules = _modules()
    families = {name for name in modules if name.count(".") == 2 and name.startswith("bertcli.tasks.")}
    families = {name for name in families if modules[name].name == "__init__.py"}
    assert {"bertcli.tasks.classification", "bertcli.tasks.tagging", "bertcli.tasks.span"} <= families
    for name, path in modules.items():
        if name.startswith("bertcli.pipelines."):
            reached = {m for m in _imports(name, path, modules) if any(m.startswith(f) for f in families)}
            assert reached == set(), f"{name} imports {sorted(reached)}: call bertcli.tasks.registry's family"
            source = path.read_text(encoding="utf-8")
            assert "is_span" not in source and "is_tagging" not in source, name


def test_the_schemas_list_of_file_tasks_is_every_registered_task_but_glues():
    # The finetune schema names the tasks that need data.train_file without importing the registry (which imports
    # torch); this keeps that list equal to what the families register.
    import pytest

    from bertcli.config import load_config
    from bertcli.errors import ConfigError
    from bertcli.schema.finetune import FILE_TASK_NAMES, FinetuneConfig
    from bertcli.tasks.classification import GLUE_TASKS
    from bertcli.tasks.registry import families

    registered = {name for family in families() for name in family.task_names}
    assert set(FILE_TASK_NAMES) == registered - set(GLUE_TASKS)
    with pytest.raises(ConfigError, match="a swag task needs data.train_file"):
        load_config(FinetuneConfig, values={"task.name": "swag", "model.path": "m", "data.dir": "d"})
