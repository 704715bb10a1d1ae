"""The table of variant facts: consistent with the derived names, checked on bad specs, read
by every module instead of comparisons against variant names."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.flash.policy import get_policy
from amla_numerics.pipeline.rescale import rescale_cost
from amla_numerics.variants import (
    AMLA_VARIANTS,
    FP8_P_VARIANTS,
    SPECS,
    STALE_MAX_VARIANTS,
    TAU_UNITS,
    VARIANT_DESCRIPTIONS,
    VARIANTS,
    VariantSpec,
    default_tau,
    spec,
)

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "amla_numerics"


def test_derived_names_follow_the_specs() -> None:
    assert VARIANTS == tuple(SPECS) and VARIANTS[0] == "naive"
    assert all(s.name == n for n, s in SPECS.items())
    assert VARIANT_DESCRIPTIONS == {n: s.description for n, s in SPECS.items()}
    assert all(VARIANT_DESCRIPTIONS.values())
    assert set(AMLA_VARIANTS) == {n for n, s in SPECS.items() if s.rescale == "int_add"}
    assert set(AMLA_VARIANTS) == {n for n, s in SPECS.items() if s.fold is not None}
    assert FP8_P_VARIANTS == {n: s.p_cast for n, s in SPECS.items() if s.p_cast}
    assert TAU_UNITS == {n: s.stale_max for n, s in SPECS.items() if s.stale_max}
    assert STALE_MAX_VARIANTS == tuple(TAU_UNITS)
    assert [n for n, s in SPECS.items() if not s.tiled] == ["naive"]
    assert [n for n, s in SPECS.items() if s.rescale == "none"] == ["naive"]
    # a threshold in nats defaults to skip-scale's 6, one in log2 units to lazy's 8
    assert {default_tau(n) for n, u in TAU_UNITS.items() if u == "ln"} == {6.0}
    assert {default_tau(n) for n, u in TAU_UNITS.items() if u == "log2"} == {8.0}


def test_a_base_differs_only_by_its_p_cast() -> None:
    twins = {n: s for n, s in SPECS.items() if s.base is not None}
    assert twins  # fa_fp8 and amla_fp8
    for name, s in twins.items():
        base = SPECS[s.base]  # type: ignore[index]
        assert s.p_cast is not None and base.p_cast is None and base.base is None
        same = dataclasses.replace(s, name=base.name, description=base.description)
        assert dataclasses.replace(same, p_cast=None, base=None) == base, name


@pytest.mark.parametrize(
    "fields",
    [
        {"rescale": "shift"},
        {"rescale": "multiply", "fold": "r_hat"},  # a fold without the integer add
        {"rescale": "multiply", "compensation": "additive"},
        {"rescale": "multiply", "guard": True},
        {"rescale": "int_add"},  # the integer add needs a fold
        {"rescale": "multiply", "tiled": False},
        {"rescale": "none"},  # rescale none is the one-block run
        {"rescale": "multiply", "stale_max": "log10"},
        {"rescale": "multiply", "p_cast": "bf16"},
        {"rescale": "multiply", "o_storage": "fp16"},
        {"rescale": "multiply", "softmax": "exp3"},
    ],
)
def test_inconsistent_specs_are_refused(fields: dict) -> None:
    with pytest.raises(ValueError, match="VariantSpec 'x'"):
        VariantSpec("x", description="d", **fields)


def test_consistent_specs_are_accepted() -> None:
    for fields in (
        {"rescale": "multiply"},
        {"rescale": "none", "tiled": False},
        {"rescale": "int_add", "fold": "r_fp32", "compensation": "exact", "guard": True},
        {"rescale": "multiply", "stale_max": "ln", "p_cast": "e5m2", "o_storage": "bf16"},
    ):
        assert VariantSpec("x", description="d", **fields).name == "x"
    for s in SPECS.values():  # the shipped table passes its own checks again
        assert dataclasses.replace(s) == s


def test_spec_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown variant 'fa_fp64' for argument 'v'"):
        spec("fa_fp64", "v")
    with pytest.raises(ValueError, match="unknown variant"):
        spec(None)


def test_specs_match_the_emulator() -> None:
    """Behavioural oracles: an FP8 twin is its base under an FP8 policy, bit for bit; the
    untiled variant does not see block_n; O in BF16 is O rounded to BF16."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((3, 16), (70, 16), (70, 8)))
    q[:, 0] = 8.0  # a growing max across blocks: every rescale path runs
    k[:, 0] = np.linspace(0.0, 2.0, 70)
    pol = get_policy("ascend").replace(p_cast="e4m3", p_cast_rounding="rne")
    for name, s in SPECS.items():
        run = flash.attention(q, k, v, name, block_n=16, policy=pol).out
        if s.base is not None:
            base = flash.attention(q, k, v, s.base, block_n=16, policy=pol).out
            np.testing.assert_array_equal(run, base)
        other = flash.attention(q, k, v, name, block_n=32, policy=pol).out
        assert np.array_equal(run, other) == (not s.tiled), name
    bf = flash.attention(q, k, v, "fa_bf16", block_n=16).out
    assert spec("fa_bf16").o_storage == "bf16"
    np.testing.assert_array_equal(bf.astype(np.float64), np.asarray(bf, np.float32))


def test_pipeline_costs_read_the_specs() -> None:
    for name, s in SPECS.items():
        c = rescale_cost(name)
        assert c.o_store_bytes == (2 if s.o_storage == "bf16" else 4), name
        assert c.p_bytes == (1 if s.p_cast else 2), name
        assert c.two_pass == (not s.tiled), name
        assert (c.softmax_extra_passes >= 1) == (s.fold is not None or s.softmax == "fa4")
        assert (c.probability == 1.0) == (s.stale_max is None), name
    assert rescale_cost("fa_fp32_ub").p_bytes == rescale_cost("fa_fp32").p_bytes


# Comparisons against a variant-name literal that are labels, not facts of a scheme:
# (module relative to amla_numerics/, name) -> how many such comparisons it holds.
ALLOWED: dict[tuple[str, str], int] = {
    # the accuracy figure plots amla against its baseline fa_fp32 and amla_nocomp by name
    ("analysis/plots.py", "amla"): 1,
    ("analysis/plots.py", "fa_fp32"): 1,
    ("analysis/plots.py", "amla_nocomp"): 1,
    # the lazy records' measured rescale rate is handed to the pipeline as lazy's own
    ("analysis/report.py", "lazy"): 3,
    # the CLI's --rescale-prob is documented and checked for the lazy variant
    ("cli/pipeline.py", "lazy"): 2,
}


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [x for e in node.elts for x in _literals(e)]
    return []


def _name_comparisons(source: str) -> list[str]:
    """Variant names compared (==, !=, in, not in...) in ``source``; a comparison with a
    spec field (``sp.softmax == "fa4"``) compares a fact's value, not a name."""
    fields = {f.name for f in dataclasses.fields(VariantSpec)}
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if any(isinstance(o, ast.Attribute) and o.attr in fields for o in operands):
            continue
        found += [x for o in operands for x in _literals(o) if x in SPECS]
    return found


def test_the_name_scan_finds_comparisons() -> None:
    assert _name_comparisons('if v == "amla_fp32r" or w in ("lazy", "fa4"): pass') == [
        "amla_fp32r",
        "lazy",
        "fa4",
    ]
    assert _name_comparisons('x = sp.softmax == "fa4"; y = v == "fa_fp64"') == []
    assert _name_comparisons('f(variant="amla"); d = {"naive": 1}') == []


def test_no_module_compares_variant_names() -> None:
    counts: dict[tuple[str, str], int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "variants.py":
            continue
        for name in _name_comparisons(path.read_text()):
            counts[(rel, name)] = counts.get((rel, name), 0) + 1
    assert counts == ALLOWED
