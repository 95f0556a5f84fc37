"""The layout README describes: no import cycles, and each concern in its one place."""
import ast
from pathlib import Path

from tests.conftest import PROJECT_DIR

PACKAGE = "chalicelib"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(path): path for path in (PROJECT_DIR / PACKAGE).rglob("*.py")}


def _imports(path: Path, modules) -> set:
    """Every chalicelib module the file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from chalicelib import config` imports the module chalicelib.config;
                # `from chalicelib.models import Task`, the module chalicelib.models.
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif node.module in modules:
                    found.add(node.module)
    return found


def _cycles(graph):
    """Each cycle once, as the list of modules along it."""
    cycles, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_module_of_chalicelib_imports_itself_back():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_use_cases_never_build_their_own_store_or_trigger():
    # The composition root (chalicelib.wiring) is the one place that builds them.
    for name in ("service", "executor", "sweeper", "local/dispatcher"):
        source = (PROJECT_DIR / PACKAGE / f"{name}.py").read_text()
        assert "wiring.runtime(" not in source and "build_store" not in source, name
        assert "SQLiteTaskStore" not in source and "DynamoDBTaskStore" not in source, name
