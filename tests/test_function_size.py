"""Every function of the package reads in one screen: at most :data:`MAX_LINES` lines of
code (its docstring not counted). A longer function is split where a name explains the
part; this test names each one that is not."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 80
PACKAGE = Path(__file__).resolve().parents[1] / "amla_numerics"


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    total = (fn.end_lineno or fn.lineno) - fn.lineno + 1
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):
            total -= (first.end_lineno or first.lineno) - first.lineno + 1
    return total


def _long_functions(root: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node)
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n})")
    return found


def test_no_function_is_longer_than_the_limit():
    assert not _long_functions(PACKAGE, MAX_LINES)


def test_the_rule_catches_a_long_function(tmp_path):
    """The check can fail: a generated 81-line function is named, an 80-line one with a
    docstring is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    lines = [f"    x{i} = {i}\n" for i in range(80)]
    (pkg / "a.py").write_text('def ok():\n    """Doc."""\n' + "".join(lines[:79]))
    (pkg / "b.py").write_text("def too_long():\n" + "".join(lines))
    assert _long_functions(pkg, MAX_LINES) == ["pkg/b.py:1 too_long (81)"]
