"""Budgets for any kernel: the TOML format, the shared check, check-budgets and --update."""

from __future__ import annotations

import math

import pytest

from amla_numerics.analysis.budgets import (
    BUDGET_METRICS,
    budgets_from_records,
    check_budgets,
    check_limits,
    default_budgets_path,
    format_budgets,
    load_budgets,
    parse_budgets,
)
from amla_numerics.analysis.grid import Case, evaluate_case
from amla_numerics.cli import main

_HEAD = "[meta]\nrows = 2\nblock_n = 128\nseed = 0\nmargin = 1.5\n"


def _book(limit: float, metric: str = "cond_err_max") -> str:
    return (
        _HEAD + "[kernels.amla]\n[[kernels.amla.cases]]\n"
        f"workload = 'drift'\nhead_dim = 32\nkv_len = 512\n{metric} = {limit!r}\n"
    )


def _measured(metric: str = "cond_err_max") -> float:
    (rec,) = evaluate_case(Case(32, 512, "drift", 0, 2, 128), ["amla"])
    return float(rec.to_dict()[metric])


@pytest.mark.parametrize("metric", ["cond_err_max", "bf16_out_incorrect_frac"])
def test_a_budget_just_below_the_measured_value_fails_with_the_message(tmp_path, capsys, metric):
    measured = _measured(metric)
    assert measured > 0
    path = tmp_path / "b.toml"
    path.write_text(_book(math.nextafter(measured, 0), metric))
    assert main(["check-budgets", "--budgets", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"OVER: amla drift d=32 N=512 {metric} measured {measured:.6g} > budget" in err
    path.write_text(_book(measured, metric))  # inclusive
    assert main(["check-budgets", "--budgets", str(path)]) == 0


def test_check_limits_is_shared_and_nan_never_passes():
    (c,) = check_limits("k", "case", {"cond_err_max": math.nan}, {"cond_err_max": 1e9})
    assert not c.ok and c.describe().startswith("OVER: k case cond_err_max measured nan")
    (c,) = check_limits("k", "case", {"cond_err_max": math.inf}, {"cond_err_max": math.inf})
    assert c.ok  # an explicit inf budget: a known-garbage case
    (c,) = check_limits("k", "case", {}, {"row_rel_max": 1.0})
    assert not c.ok  # a metric that was not measured is not a pass


def test_user_kernel_limits_and_case_selectors():
    book = parse_budgets(
        _HEAD
        + "[kernels.mine]\ncond_err_max = 100\nrow_rel_max = 1e-3\n"
        + "[[kernels.mine.cases]]\nmatch = 'mla_*'\ncond_err_max = 50\n"
        + "[[kernels.mine.cases]]\nkv_len = 4096\nhead_dim = 576\ncond_err_max = 20\n"
    )
    kb = book.kernel("mine")
    assert kb.variant is None
    assert kb.limits_for(name="sink_1", kv_len=4096, head_dim=64) == {
        "cond_err_max": 100.0,
        "row_rel_max": 1e-3,
    }
    assert kb.limits_for(name="mla_h128", kv_len=1024, head_dim=576)["cond_err_max"] == 50.0
    assert kb.limits_for(name="mla_h128", kv_len=4096, head_dim=576)["cond_err_max"] == 20.0
    with pytest.raises(ValueError, match=r"no kernel 'theirs'.*mine"):
        book.kernel("theirs")
    assert check_budgets(book) == []  # users' kernels are checked by compare, not here


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[meta\n", "not valid TOML"),
        (_HEAD, "no [kernels.NAME] table"),
        (_HEAD + "[[budget]]\nvariant = 'amla'\n", "old [[budget]] layout"),
        (_HEAD + "[kernels.k]\nmax_ulp = 3\n", "unknown metric 'max_ulp'"),
        (_HEAD + "[kernels.k]\ncond_err_max = -1\n", "must be >= 0"),
        (_HEAD + "[kernels.k]\ncond_err_max = 'x'\n", "must be a number"),
        (_HEAD + "[kernels.k]\nvariant = 'fa_fp64'\n", "unknown variant"),
        (_HEAD + "[kernels.amla]\n[[kernels.amla.cases]]\ncond_err_max = 1\n", "at least one of"),
        (_HEAD + "[kernels.amla]\n[[kernels.amla.cases]]\nhead_dim = 'x'\n", "must be int"),
    ],
)
def test_malformed_budget_files_are_one_sentence_exit_2(tmp_path, capsys, text, needle):
    with pytest.raises(ValueError) as info:
        parse_budgets(text)
    assert needle in str(info.value)
    path = tmp_path / "b.toml"
    path.write_text(text)
    assert main(["check-budgets", "--budgets", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_update_writes_measured_times_margin_and_round_trips(tmp_path):
    src = tmp_path / "in.toml"
    src.write_text(_book(math.inf) + "[kernels.mine]\nrow_rel_max = 0.5\n")
    dst = tmp_path / "out.toml"
    assert main(["check-budgets", "--budgets", str(src), "--update", str(dst)]) == 0
    new = load_budgets(dst)
    (case,) = new.kernel("amla").cases
    (rec,) = evaluate_case(Case(32, 512, "drift", 0, 2, 128), ["amla"])
    for m in BUDGET_METRICS:
        x = float(rec.to_dict()[m])
        assert x * 1.5 <= case.limits[m] <= max(x * 1.5 * 1.1, x + 1 if "ulp" in m else 0) or (
            x == 0 and case.limits[m] == 0
        ), m
    assert new.kernel("mine").limits == {"row_rel_max": 0.5}  # users' kernels kept
    assert parse_budgets(format_budgets(new)) == new
    assert main(["check-budgets", "--budgets", str(dst)]) == 0


def test_budgets_from_records_rounds_up():
    (rec,) = evaluate_case(Case(32, 512, "random", 0, 2, 128), ["fa_fp32"])
    (lim,) = budgets_from_records([rec], 1.0)
    for m in BUDGET_METRICS:
        assert lim[m] >= float(rec.to_dict()[m])


def test_shipped_budgets_cover_every_variant_and_hold(capsys):
    book = load_budgets(default_budgets_path())
    from amla_numerics.variants import VARIANTS

    assert {k.variant for k in book.kernels.values()} >= set(VARIANTS)
    assert main(["check-budgets", "--jobs", "2"]) == 0
    assert "budgets hold" in capsys.readouterr().out
