"""The package's import graph: no cycles, no reach into another package's private modules,
and light imports where users pay for them (the pytest plugin, ``--help``).

The graph is read from the source with :mod:`ast`, so an import hidden inside a function, a
``TYPE_CHECKING`` block or a relative import counts the same as one at module level.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "amla_numerics"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    mods = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _owner(name: str, mods: dict) -> str:
    """The longest prefix of ``name`` that is one of the package's modules ('' if none)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def _dynamic_targets(arg: ast.expr, mods: dict) -> list[str]:
    """``importlib.import_module("a.b")`` imports ``a.b``; ``import_module(f"a.{x}")`` may
    import any module directly under ``a``, so it counts as importing each of them."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return [m for m in mods if m.startswith(prefix) and "." not in m[len(prefix) :]]
    return []


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        base = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    full = anchor + ("." + node.module if node.module else "")
                else:
                    full = node.module or ""
                targets = [
                    f"{full}.{a.name}" if f"{full}.{a.name}" in mods else full for a in node.names
                ]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                and node.args
            ):
                targets = _dynamic_targets(node.args[0], mods)
            for t in targets:
                owner = _owner(t, mods) if t.startswith(PACKAGE) else ""
                if owner and owner != mod:
                    graph[mod].add(owner)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    # the oracle of the tests below must be able to fire
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_dynamic_imports():
    graph = import_graph()
    # the report's files import the plots inside a function (matplotlib on use)
    assert f"{PACKAGE}.analysis.plots" in graph[f"{PACKAGE}.analysis.outputs"]
    # cli/__init__ loads its subcommands with importlib.import_module(f"...{module}")
    assert f"{PACKAGE}.cli.report" in graph[f"{PACKAGE}.cli"]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_module_imports_another_packages_private_module():
    bad = []
    for mod, targets in import_graph().items():
        for t in targets:
            parent, _, leaf = t.rpartition(".")
            private = leaf.startswith("_") and not leaf.startswith("__")
            if private and parent != PACKAGE and not mod.startswith(parent + ".") and mod != parent:
                bad.append(f"{mod} -> {t}")
    assert bad == []


def test_the_emulator_does_not_import_the_reference():
    graph = import_graph()
    flash = [m for m in graph if m.startswith(f"{PACKAGE}.flash")]
    assert [m for m in flash if any(t.startswith(f"{PACKAGE}.reference") for t in graph[m])] == []


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    ["import amla_numerics.testing", "import amla_numerics.testing.plugin"],
)
def test_the_testing_api_and_the_plugin_import_neither_matplotlib_nor_scipy_stats(statement):
    loaded = _loaded_after(statement)
    assert "matplotlib" not in loaded
    assert "scipy.stats" not in loaded


def test_help_loads_no_numerical_library():
    # --help lists the subcommands without importing ml_dtypes, mpmath, scipy or matplotlib
    loaded = _loaded_after(
        "from amla_numerics.cli import main; import contextlib, io; "
        "f = io.StringIO(); r = contextlib.redirect_stdout(f); r.__enter__(); "
        "main(['--help']); r.__exit__(None, None, None)"
    )
    assert {"ml_dtypes", "mpmath", "scipy", "matplotlib"} & loaded == set()
