"""The house rules of architecture.md, read from the source with ``ast`` (no imports run):
who may import whom, no import circle inside a package, and short functions outside tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "db", "workers", "service", "ui", "finetune", "bench")
MAX_FUNCTION_LINES = 80


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function, made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import mod`
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _sources(package)}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_ui_never_imports_workers():
    offenders = {_module_name(p): sorted(m for m in _imports(p) if m == "workers" or m.startswith("workers."))
                 for p in _sources("ui")}
    assert not {k: v for k, v in offenders.items() if v}, "ui/ must go through service/, never workers/"


def test_service_only_enqueues():
    """The service reaches workers/ only to send tasks (workers.enqueue), never their bodies."""
    used = {m for p in _sources("service") for m in _imports(p) if m == "workers" or m.startswith("workers.")}
    assert used <= {"workers", "workers.enqueue"} | {m for m in used if m.startswith("workers.enqueue.")}


def test_core_stays_pure():
    banned = ("db", "workers", "service", "ui", "app", "celery", "gradio", "sqlalchemy", "fastapi")
    offenders = {_module_name(p): sorted(m for m in _imports(p) if m.split(".")[0] in banned)
                 for p in _sources("core")}
    assert not {k: v for k, v in offenders.items() if v}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


@pytest.mark.parametrize("package", [p for p in PACKAGES if (ROOT / p).is_dir()])
def test_no_import_circle_inside_a_package(package):
    # a package's __init__ re-exporting its modules is not a circle: drop edges into the package itself
    graph = {name: {m for m in deps if m != package} for name, deps in _graph(package).items()}
    cycles = _cycles(graph)
    assert not cycles, f"import circles in {package}/: {cycles}"


def test_functions_are_short_outside_tests():
    long: list[str] = []
    for path in [ROOT / "app.py", *[p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in _sources(pkg)]]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 80 lines: " + "; ".join(long)


def test_the_checker_sees_a_circle(tmp_path, monkeypatch):
    """The circle finder is not vacuous: two modules importing each other are caught."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from pkg.a import f\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    graph = {name: deps - {"pkg"} for name, deps in _graph("pkg").items()}
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
