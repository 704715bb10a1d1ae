"""Split-KV runs: one split is the unsplit run bit for bit; every variant with S = 2..16
splits stays within its split bound against the certified reference; both combines agree
bit for bit with a scalar Fraction oracle; empty, masked and dead splits; AMLA's scale and
r^ are undone per split."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound, split_bound
from amla_numerics.analysis.workloads import make_workload
from amla_numerics.flash import Accumulation, MatmulPolicy, get_policy
from amla_numerics.flash.splitkv import (
    COMBINES,
    SPLIT_HAZARDS,
    combine_partials,
    exp2_cr,
    log2_cr,
    split_ranges,
)
from amla_numerics.flash.stages import exp_cr
from amla_numerics.formats import FP32
from amla_numerics.variants import AMLA_VARIANTS, VARIANTS
from tests.oracle import oracle_round

MM32 = MatmulPolicy("fp32", Accumulation("exact"), "fp32")
#: Every stage in FP32 (no BF16 casts): the combine's own error is not hidden by the casts.
FP32_ONLY = get_policy("ascend").replace(p_cast=None, r_cast=None, qk=MM32, pv=MM32)


def _same(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


def _data(seed, m=3, n=300, dk=16, dv=6, mag=2.0):
    rng = np.random.default_rng(seed)
    return (
        (rng.standard_normal((m, dk)) * mag).astype(ml_dtypes.bfloat16),
        rng.standard_normal((n, dk)).astype(ml_dtypes.bfloat16),
        rng.standard_normal((n, dv)).astype(ml_dtypes.bfloat16),
    )


# ---------------------------------------------------------------------------------------
# splits=1 is today's run


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_split_is_the_unsplit_run(variant):
    q, k, v = _data(1)
    base = flash.attention(q, k, v, variant, block_n=32, trace=True)
    for plan in (1, [(0, 300)]):
        res = flash.attention(q, k, v, variant, block_n=32, trace=True, splits=plan)
        assert _same(res.out, base.out) and _same(res.lse, base.lse)
        assert res.hazards == base.hazards and res.splits is None
        assert res.hazard_mask.keys() == base.hazard_mask.keys()
        assert all(_same(res.hazard_mask[h], base.hazard_mask[h]) for h in base.hazard_mask)
        assert _same(res.garbage_mask(), base.garbage_mask())
        assert all(_same(getattr(res.trace, f), getattr(base.trace, f)) for f in ("m", "n", "N"))


# ---------------------------------------------------------------------------------------
# the bound


_W = make_workload("drift", head_dim=16, kv_len=700, rows=3, seed=5)
_REF = reference.certified_attention(_W.q, _W.k, _W.v, _W.scale)


def _check_bound(variant, splits, combine, policy=None, w=_W, ref=_REF, block_n=32):
    res = flash.attention(
        w.q,
        w.k,
        w.v,
        variant,
        scale=w.scale,
        block_n=block_n,
        splits=splits,
        combine=combine,
        policy=policy,
    )
    assert not any(res.hazards[h] for h in res.hazards if h not in ("ok", "split_empty"))
    eb = split_bound(
        variant,
        w.q,
        w.k,
        w.v,
        w.scale,
        splits=splits,
        block_n=block_n,
        combine=combine,
        policy=policy,
    )
    err = np.abs(res.out.astype(np.float64) - ref.out) + ref.bound
    ratio = err / eb
    worst = np.unravel_index(np.argmax(ratio), ratio.shape)
    assert np.all(err <= eb), (
        f"{variant} S={splits} {combine}: {int(np.sum(err > eb))} of {err.size} elements "
        f"over the bound; worst {worst}: error {err[worst]:.3e} > bound {eb[worst]:.3e}"
    )
    return float(np.max(ratio))


#: The split counts of the default run (the smallest, odd ones, the largest); every count
#: from 2 to 16 runs under ``-m slow``.
_SAMPLE_SPLITS = (2, 3, 7, 16)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "n_splits",
    [n if n in _SAMPLE_SPLITS else pytest.param(n, marks=pytest.mark.slow) for n in range(2, 17)],
)
def test_every_variant_within_its_split_bound(variant, n_splits):
    for combine in COMBINES:
        _check_bound(variant, n_splits, combine)


@pytest.mark.parametrize("variant", ["fa_fp32", "amla_fp32r", "lazy", "naive"])
@pytest.mark.parametrize("combine", list(COMBINES))
def test_split_bound_holds_with_every_stage_in_fp32(variant, combine):
    """No BF16 cast: the split weights' and the combine's FP32 errors are the visible ones."""
    for plan in (2, 16, [(0, 5), (5, 5), (5, 333), (333, 700)]):
        _check_bound(variant, plan, combine, policy=FP32_ONLY)


def _masks(n_rows: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """Masks of every kind the emulator takes, each with a split fully masked for a row."""
    rng = np.random.default_rng(seed)
    keep = rng.random((n_rows, n)) > 0.3
    keep[0, 200:520] = False  # row 0: whole splits of the 2..16 plans masked
    keep[-1, :300] = False  # the last row: its first splits (AMLA's zero-O start) masked
    bias = np.where(keep, rng.uniform(-6.0, 2.0, (n_rows, n)), -np.inf)
    causal_like = np.tril(np.ones((n_rows, n), bool), k=n - n_rows)
    return {"keep": keep, "bias": bias, "causal_like": causal_like}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["keep", "bias", "causal_like"])
def test_masked_split_runs_within_the_split_bound(variant, kind):
    """Masks with partly and fully masked splits (weight exactly 0): every element the
    integer add's garbage did not touch is within the split bound of the certified
    reference, for both combines and S = 2, 5, 16; a row with no key has an infinite bound."""
    w = make_workload("drift", head_dim=16, kv_len=700, rows=4, seed=9)
    mask = _masks(4, 700, seed=2)[kind]
    ref = reference.certified_attention(w.q, w.k, w.v, w.scale, mask=mask)
    for combine in COMBINES:
        for n_splits in (2, 5, 16):
            kw = dict(scale=w.scale, block_n=32, splits=n_splits, combine=combine, mask=mask)
            res = flash.attention(w.q, w.k, w.v, variant, **kw)
            eb = split_bound(variant, w.q, w.k, w.v, **kw)
            covered = ~res.garbage_mask()
            err = np.abs(res.out.astype(np.float64) - ref.out) + ref.bound
            bad = covered & ~(err <= eb)
            assert not bad.any(), (
                f"{variant} {kind} S={n_splits} {combine}: {int(bad.sum())} elements over the "
                f"bound; error {err[bad][:3]} > bound {eb[bad][:3]}"
            )
            assert np.all(np.isfinite(eb)), "every row attends some key: a finite bound"
    dead_row = (
        np.zeros_like(mask, dtype=bool) if mask.dtype == bool else np.full(mask.shape, -np.inf)
    )
    dead = np.where(np.arange(4)[:, None] == 1, dead_row, mask)
    eb = split_bound(variant, w.q, w.k, w.v, w.scale, splits=4, block_n=32, mask=dead)
    assert np.all(np.isinf(eb[1])) and np.all(np.isfinite(eb[[0, 2, 3]]))


@pytest.mark.parametrize("big", [-1e4, -1e9, -3e38])
def test_huge_finite_biases_give_no_nan_bound(big):
    """A finite bias used as a mask (CANN masks with -1e12) brings ``u |bias|`` nats of score
    error: the bounds may become useless (+inf) there but never NaN, never below the error,
    and without a warning (the suite turns warnings into errors)."""
    w = make_workload("random", head_dim=16, kv_len=512, rows=2, seed=1)
    bias = np.zeros((2, 512))
    bias[:, 256:] = big
    kw = dict(scale=w.scale, block_n=64, mask=bias)
    ref = reference.attention(w.q, w.k, w.v, w.scale, mask=bias)
    unsplit = elementwise_bound(
        a_priori_bound("fa_fp32", head_dim=16, kv_len=512, block_n=64),
        w.q,
        w.k,
        w.v,
        w.scale,
        mask=bias,
    )
    for eb, splits in ((split_bound("fa_fp32", w.q, w.k, w.v, splits=2, **kw), 2), (unsplit, 1)):
        out = flash.attention(w.q, w.k, w.v, "fa_fp32", splits=splits, **kw).out
        assert not np.isnan(eb).any()
        assert np.all(np.abs(out.astype(np.float64) - ref) <= eb)
        if big == -1e4:
            assert np.all(np.isfinite(eb))


# ---------------------------------------------------------------------------------------
# the combine against a scalar Fraction oracle


def _r32(x: Fraction) -> float:
    return oracle_round(x, FP32, "rne")


def _f(x) -> Fraction:
    return Fraction(float(x))


def _mp32(fn, x: float) -> float:
    """``fn(x)`` of mpmath at 200 bits, rounded once to FP32 through an exact Fraction."""
    if x == -math.inf:
        return 0.0 if fn is mpmath.exp or fn is _pow2 else -math.inf
    with mpmath.workprec(200):
        sign, man, exp, _ = fn(mpmath.mpf(x))._mpf_
        frac = Fraction(int(man)) * Fraction(2) ** int(exp)
        return _r32(-frac if sign else frac)


def _pow2(x):
    return mpmath.power(2, x)


def _log2(x):
    return mpmath.log(x, 2)


def _oracle_cann(o, m, l, row):
    S = o.shape[0]
    live = [s for s in range(S) if m[s, row] != -np.inf]
    big = float(np.finfo(np.float32).max)
    mx = max([-big] + [float(m[s, row]) for s in live])
    t = [
        _r32(_f(l[s, row]) * _f(_mp32(mpmath.exp, _r32(_f(m[s, row]) - _f(mx)))))
        if s in live
        else 0.0
        for s in range(S)
    ]
    tot = 0.0
    for s in range(S):
        tot = _r32(_f(tot) + _f(t[s]))
    w = [_r32(_f(t[s]) / _f(tot)) for s in range(S)]
    out = []
    for c in range(o.shape[-1]):
        p = [float(o[s, row, c]) if s in live else 0.0 for s in range(S)]
        acc = _r32(_f(w[0]) * _f(p[0]))
        for s in range(1, S):
            acc = _r32(_f(acc) + _f(_r32(_f(w[s]) * _f(p[s]))))
        out.append(acc)
    return out, w


def _oracle_flashmla(o, m, l, row):
    S = o.shape[0]
    log2e = float(np.float32(1.0 / math.log(2.0)))
    live = [s for s in range(S) if l[s, row] != 0]
    lse = [
        _r32(_f(_mp32(_log2, float(l[s, row]))) + _f(_r32(_f(m[s, row]) * _f(log2e))))
        if s in live
        else -math.inf
        for s in range(S)
    ]
    mx = max(lse)
    mx = 0.0 if mx == -math.inf else mx
    lanes = [0.0] * 32
    for s in range(S):  # lane s % 32 adds its splits in order (S <= 32 here)
        e = _mp32(_pow2, _r32(_f(lse[s]) - _f(mx))) if lse[s] != -math.inf else 0.0
        lanes[s % 32] = _r32(_f(lanes[s % 32]) + _f(e))
    for off in (16, 8, 4, 2, 1):
        lanes = [_r32(_f(lanes[j]) + _f(lanes[j ^ off])) for j in range(32)]
    g = _r32(_f(_mp32(_log2, lanes[0])) + _f(mx))
    w = [_mp32(_pow2, _r32(_f(lse[s]) - _f(g))) if lse[s] != -math.inf else 0.0 for s in range(S)]
    out = []
    for c in range(o.shape[-1]):
        acc = 0.0
        for s in range(S):
            p = float(o[s, row, c]) if s in live else 0.0
            acc = _r32(_f(w[s]) * _f(p) + _f(acc))  # one rounding: the FMA
        out.append(acc)
    return out, w


@pytest.mark.parametrize("method", list(COMBINES))
@pytest.mark.parametrize("seed", range(4))
def test_combine_matches_the_fraction_oracle(method, seed):
    rng = np.random.default_rng(seed)
    S, rows, dv = int(rng.integers(2, 17)), 5, 3
    m = rng.uniform(-40, 40, (S, rows)).astype(np.float32)
    l = rng.uniform(1, 600, (S, rows)).astype(np.float32)
    o = rng.standard_normal((S, rows, dv)).astype(np.float32)
    dead = rng.random((S, rows)) < 0.25
    dead[0, 0] = True
    dead[:, 1] = False
    dead[rng.integers(S), 1] = False
    m[dead], l[dead] = -np.inf, 0.0
    o[dead] = np.nan  # the dead split's 0/0 partial must never reach the output
    dead[:, 2] = False  # a row of equal maxima: ties in every max
    m[:, 2] = 3.0
    l[:, 2] = rng.uniform(1, 600, S).astype(np.float32)
    o[:, 2] = rng.standard_normal((S, dv)).astype(np.float32)
    out, _, w = combine_partials(o, m, l, method, exp=exp_cr)
    oracle = _oracle_cann if method == "cann" else _oracle_flashmla
    for row in range(rows):
        if np.all(dead[:, row]):
            continue
        want, want_w = oracle(o, m, l, row)
        assert out[row].tolist() == want, (method, row)
        assert w[:, row].tolist() == want_w, (method, row)


def test_a_row_with_no_live_split_is_the_kernels_convention():
    o = np.full((3, 1, 2), np.nan, np.float32)
    m = np.full((3, 1), -np.inf, np.float32)
    l = np.zeros((3, 1), np.float32)
    out, lse, _ = combine_partials(o, m, l, "cann", exp=exp_cr)
    assert np.all(np.isnan(out)) and lse[0] == -np.inf  # 0/0, as the unsplit run
    out, lse, _ = combine_partials(o, m, l, "flashmla", exp=exp_cr)
    assert np.all(out == 0) and lse[0] == np.inf  # FlashMLA: lse = +inf, O = 0


# ---------------------------------------------------------------------------------------
# empty, masked and dead splits; AMLA per split


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_splits_change_nothing(variant):
    q, k, v = _data(2)
    plain = flash.attention(q, k, v, variant, block_n=32, splits=[(0, 96), (96, 300)])
    holed = flash.attention(
        q, k, v, variant, block_n=32, splits=[(0, 0), (0, 96), (96, 96), (96, 300), (300, 300)]
    )
    assert _same(holed.out, plain.out) and _same(holed.lse, plain.lse)
    assert holed.hazards["split_empty"] == 3 * q.shape[0] * v.shape[1]
    assert plain.hazards["split_empty"] == 0
    assert holed.splits is not None and holed.splits.dead[[0, 2, 4]].all()
    assert np.all(holed.splits.weight[[0, 2, 4]] == 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_fully_masked_split_equals_dropping_its_keys(variant):
    q, k, v = _data(3)
    keep = np.ones((q.shape[0], 300), bool)
    keep[:, 96:160] = False
    masked = flash.attention(
        q, k, v, variant, block_n=32, mask=keep, splits=[(0, 96), (96, 160), (160, 300)]
    )
    idx = np.r_[0:96, 160:300]
    dropped = flash.attention(q, k[idx], v[idx], variant, block_n=32, splits=[(0, 96), (96, 236)])
    assert _same(masked.out, dropped.out)
    assert masked.hazards["split_masked"] == q.shape[0] * v.shape[1]
    assert masked.splits is not None and np.all(np.isneginf(masked.splits.m[1]))


def test_a_split_whose_first_blocks_are_masked_is_an_amla_zero_hazard():
    q, k, v = _data(4)
    keep = np.ones((q.shape[0], 300), bool)
    keep[0, 150:214] = False  # row 0: the second split's first two blocks
    kw = dict(block_n=32, mask=keep, splits=[(0, 150), (150, 300)])
    am = flash.attention(q, k, v, "amla", **kw)
    gd = flash.attention(q, k, v, "amla_guarded", **kw)
    fa = flash.attention(q, k, v, "fa_fp32", **kw)
    assert gd.hazards["zero"] >= am.hazards["zero"] > 0  # guarded O stays 0 one block longer
    assert fa.hazards["zero"] == 0
    assert np.all(np.isfinite(gd.out))
    # the garbage stays in row 0's second partial and reaches only row 0 of the output
    bad = ~np.isfinite(am.splits.out[1, 0]) | (np.abs(am.splits.out[1, 0]) > 1e3)
    assert am.hazards["split_nonfinite"] == int(np.sum(~np.isfinite(am.splits.out[1, 0])))
    assert bad.any() and np.all(np.isfinite(am.out[1:]))
    # per element: the garbage and the split classes mark row 0 only
    assert am.garbage_mask()[0].any() and not am.garbage_mask()[1:].any()
    assert am.hazard_mask["split_masked"].sum() == 0
    assert am.hazard_mask["zero"][0].any() and not am.hazard_mask["zero"][1:].any()
    assert not gd.garbage_mask().any()


@pytest.mark.parametrize("variant", AMLA_VARIANTS)
def test_amla_partials_are_unsplit_runs_on_their_keys(variant):
    """Each split restarts AMLA (n, r^, cof, the plain block-0 store) and its final division
    by l r^ undoes its own 2**n and r^: the partial is the unsplit run on its keys."""
    w = make_workload("drift", head_dim=16, kv_len=400, rows=4, seed=7)
    plan = [(0, 64), (64, 250), (250, 400)]
    res = flash.attention(
        w.q, w.k, w.v, variant, scale=w.scale, block_n=32, splits=plan, trace=True
    )
    assert res.splits is not None
    for s, (lo, hi) in enumerate(plan):
        sub = flash.attention(
            w.q, w.k[lo:hi], w.v[lo:hi], variant, scale=w.scale, block_n=32, trace=True
        )
        assert _same(res.splits.out[s], sub.out)
        assert np.array_equal(res.splits.n[s], sub.trace.n[-1])
        assert np.array_equal(res.splits.r_hat[s], sub.trace.r_hat[-1])
        assert _same(res.splits.traces[s].m, sub.trace.m)
    # the splits' scales differ (the max drifts), so a combine that forgot to undo them
    # would be off by powers of two
    assert len({tuple(res.splits.n[s].ravel()) for s in range(3)}) > 1


def test_split_hazard_classes_are_reported():
    q, k, v = _data(5)
    res = flash.attention(q, k, v, "amla", block_n=32, splits=4)
    assert set(SPLIT_HAZARDS) <= set(res.hazards)
    assert res.config["splits"] == [list(r) for r in split_ranges(300, 4, 32)]
    assert res.config["combine"] == "cann" and res.config["n_blocks"] == 10


# ---------------------------------------------------------------------------------------
# plans and arguments


def test_split_ranges_deal_whole_blocks():
    assert split_ranges(700, 3, 32) == [(0, 224), (224, 448), (448, 700)]
    for n, S, b in ((700, 16, 32), (5, 4, 2), (1, 7, 512)):
        r = split_ranges(n, S, b)
        assert len(r) == S and r[0][0] == 0 and r[-1][1] == n
        assert all(r[i][1] == r[i + 1][0] for i in range(S - 1))
        assert all(lo % b == 0 for lo, _ in r)


@pytest.mark.parametrize(
    "splits, err, match",
    [
        (0, ValueError, "must be >= 1"),
        (True, TypeError, "int or a sequence"),
        ([(0, 10), (12, 300)], ValueError, "partition"),
        ([(0, 10), (10, 200)], ValueError, "end at 200"),
        ([(0, 300, 1)], TypeError, "int or a sequence"),
        ([], ValueError, "at least one"),
        ([(0.0, 300)], TypeError, "integers"),
        ("two", TypeError, "int or a sequence"),
    ],
)
def test_bad_split_plans_are_named(splits, err, match):
    q, k, v = _data(6)
    with pytest.raises(err, match=match):
        flash.attention(q, k, v, "amla", splits=splits)


def test_unknown_combine_is_named():
    q, k, v = _data(6)
    with pytest.raises(ValueError, match=r"unknown combine 'nvidia'.*cann, flashmla"):
        flash.attention(q, k, v, "amla", splits=2, combine="nvidia")


def test_exp2_and_log2_are_correctly_rounded():
    rng = np.random.default_rng(11)
    x = np.concatenate(
        [rng.uniform(-60, 60, 300), [0.0, 1.0, -1.0, 0.5, 2.0**-24, -(2.0**-24), 127.9]]
    ).astype(np.float32)
    got = exp2_cr(x)
    assert got.tolist() == [_mp32(_pow2, float(t)) for t in x]
    y = np.concatenate([rng.uniform(0, 1e6, 300), [1.0, 2.0, 3.0, 2.0**-130, 1 + 2.0**-23]])
    y = y.astype(np.float32)
    assert log2_cr(y).tolist() == [_mp32(_log2, float(t)) for t in y]


_REF_LSE = reference.certified_attention(_W.q, _W.k, _W.v, _W.scale, return_lse=True)


@pytest.mark.parametrize("variant", ["fa_fp32", "amla", "lazy"])
@pytest.mark.parametrize("combine", list(COMBINES))
@pytest.mark.parametrize("policy", [None, FP32_ONLY], ids=["ascend", "fp32"])
def test_split_lse_within_its_bound(variant, combine, policy):
    for n_splits in (2, 7, 16):
        res = flash.attention(
            _W.q,
            _W.k,
            _W.v,
            variant,
            scale=_W.scale,
            block_n=32,
            splits=n_splits,
            combine=combine,
            policy=policy,
        )
        _, lse_b = split_bound(
            variant,
            _W.q,
            _W.k,
            _W.v,
            _W.scale,
            splits=n_splits,
            block_n=32,
            combine=combine,
            policy=policy,
            return_lse=True,
        )
        err = np.abs(res.lse - _REF_LSE.lse) + _REF_LSE.lse_bound
        assert np.all(err <= lse_b), (variant, combine, n_splits, err, lse_b)


# ---------------------------------------------------------------------------------------
# the report


def test_report_measures_split_runs_against_the_split_bound():
    from amla_numerics.analysis import ReportConfig, build_report
    from amla_numerics.analysis.render import render

    cfg = ReportConfig(
        head_dims=(16,),
        kv_lens=(512,),
        block_n=64,
        variants=("fa_fp32", "amla"),
        workloads=("drift", "alibi"),
        seeds=(0, 1),
        rows=3,
        splits=(1, 4),
        combine="flashmla",
        plots=False,
    )
    rep = build_report(cfg, throughput=False)
    assert sorted({(r.splits, r.combine) for r in rep.records}) == [
        (1, "flashmla"),
        (4, "flashmla"),
    ]
    assert all(r.bound_ratio <= 1 and r.n_violations == 0 for r in rep.records)
    masked = [r for r in rep.records if r.splits == 4 and r.workload == "alibi"]
    assert masked and all(0 < r.bound_ratio <= 1 for r in masked)  # masked runs: bounded
    split_recs = [r for r in rep.records if r.splits == 4]
    assert all(math.isnan(r.prob_bound_ratio) for r in split_recs)  # no probabilistic split bound
    sums = [s for s in rep.summaries if s["splits"] == 4]
    assert len(sums) == 4 and all(s["n_seeds"] == 2 for s in sums)
    assert "512/S4" in render(rep)


def test_report_cli_splits_and_bad_values():
    from amla_numerics.cli import main

    small = [
        "report",
        "--head-dims",
        "16",
        "--kv-lens",
        "256",
        "--block-n",
        "64",
        "--rows",
        "2",
        "--variants",
        "amla",
        "--workloads",
        "random",
        "--no-throughput",
        "--jobs",
        "1",
    ]
    assert main([*small, "--splits", "1,2"]) == 0
    assert main([*small, "--splits", "0"]) == 2
    assert main([*small, "--splits", "2", "--combine", "nvidia"]) == 2


@pytest.mark.parametrize("combine", list(COMBINES))
def test_compare_judges_a_split_kernel_against_the_matching_bound(combine):
    from amla_numerics.testing.compare import compare

    w = make_workload("drift", head_dim=16, kv_len=1024, rows=4, seed=3)
    keep = np.ones((4, 1024), bool)
    keep[:, 256:512] = False  # the second split dead for every row
    split = dict(scale=w.scale, block_n=64, splits=4, combine=combine)
    kernels = {}
    for variant, mask in (("amla", None), ("fa_fp32", keep)):
        kernels[variant] = kernel = flash.attention(
            w.q, w.k, w.v, variant, mask=mask, **split
        ).out.astype(ml_dtypes.bfloat16)
        c = compare(kernel, w.q, w.k, w.v, mask=mask, variant=variant, bit_match=[variant], **split)
        assert c.bit_match[variant] == 1.0 and c.splits == 4 and c.combine == combine
        assert 0 < c.bound_ratio <= 1 and c.bound_violations == 0
        assert c.bound_covered == kernel.size  # a dead split is no garbage: judged
    kernel = kernels["amla"]
    plain = compare(kernel, w.q, w.k, w.v, scale=w.scale, block_n=64, bit_match=["amla"])
    assert plain.bit_match["amla"] < 1.0  # the unsplit emulation is another kernel
    with pytest.raises(ValueError, match="'splits' must be an integer >= 1"):
        compare(kernel, w.q, w.k, w.v, splits=0)


# ---------------------------------------------------------------------------------------
# golden cases a split kernel must pass


def test_split_cases_are_what_they_say():
    from amla_numerics.testing.cases import CASE_WORKLOADS, SPLIT_WORKLOADS, Shape, make_case

    assert set(SPLIT_WORKLOADS) <= set(CASE_WORKLOADS)
    s = Shape(2, 1, 4096, 64, 32)
    sd = make_case("split_drift", s)
    scores = (sd["q"].astype(np.float64) @ sd["k"].astype(np.float64).T) * float(sd["scale"])
    quarter = [scores[..., i * 1024 : (i + 1) * 1024].max(axis=-1) for i in range(4)]
    assert np.all(quarter[3] - quarter[0] > 25)  # the first split's max far below the row's
    sm = make_case("split_masked", s)
    assert not sm["mask"][..., 1024:2048].any() and sm["mask"][..., :1024].all()


@pytest.mark.parametrize("variant", ["fa_fp32", "amla"])
def test_a_split_kernel_passes_the_split_cases_with_its_split_count(variant, tmp_path):
    from amla_numerics.cli import main
    from amla_numerics.dumps import write_dump
    from amla_numerics.testing.cases import Shape, make_case

    s = Shape(4, 1, 4096, 64, 32)
    for name in ("split_drift", "split_masked"):
        c = make_case(name, s)
        res = flash.attention(
            c["q"],
            c["k"],
            c["v"],
            variant,
            scale=float(c["scale"]),
            mask=c["mask"],
            block_n=256,
            splits=8,
        )
        if name == "split_masked":  # splits 2 and 3 hold only masked keys
            assert res.hazards["split_masked"] == 2 * 4 * 32
        arrays = {n: c[n] for n in ("q", "k", "v", "scale", "mask") if c[n] is not None}
        arrays["out"] = res.out
        write_dump(tmp_path / f"{name}.npz", arrays, metadata={"case": name})
    base = ["compare", str(tmp_path), "--variant", variant, "--block-n", "256"]
    assert main([*base, "--splits", "8", "--no-bit-match"]) == 0
    assert main([*base, "--splits", "0"]) == 2


def _deep_split_case(gap, block_n=32):
    """Three splits of one block: split 0's scores ``gap`` nats below the row max (its
    weight below FP32's normal range), |V| = 1e30 there and 0 elsewhere; the row max is a
    single key (its split's l near 1), the other keys 40 nats lower."""
    n = 3 * block_n
    s = np.full(n, -40.0)
    s[block_n] = 0.0
    s[:block_n] = -gap + np.linspace(0.0, 0.5, block_n)
    k = np.zeros((n, 2))
    k[:, 0] = ml_dtypes.bfloat16(s).astype(np.float64)
    k[:, 1] = ml_dtypes.bfloat16(s - k[:, 0]).astype(np.float64)
    v = np.zeros((n, 4))
    v[:block_n] = 1e30
    return np.ones((2, 2)), k, v


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("variant", ["fa_fp32", "amla", "lazy"])
def test_a_split_weight_below_the_normal_range_is_covered(variant, combine):
    """A split weight ``exp(m_s - M)`` (FlashMLA: ``exp2(lse_s - G)``) below FP32's normal
    range is rounded to a subnormal or flushed to 0: an absolute error the split bound
    carries; 104.49 nats puts it just below half the smallest subnormal (flushed: the
    whole contribution lost), where the error reaches half the bound."""
    worst = 0.0
    for gap in (95.0, 103.5, 104.49, 110.0):
        q, k, v = _deep_split_case(gap)
        ref = reference.attention(q, k, v, 1.0)
        res = flash.attention(q, k, v, variant, scale=1.0, block_n=32, splits=3, combine=combine)
        e = split_bound(variant, q, k, v, 1.0, splits=3, block_n=32, combine=combine)
        err = np.abs(np.asarray(res.out, np.float64) - ref)
        assert np.all(err <= e), (variant, combine, gap, float(np.max(err / e)))
        worst = max(worst, float(np.max(err / e)))
    if variant != "lazy":  # lazy's stale max allows l up to 2**(tau + 1): not tight
        assert worst > 0.5, worst


@pytest.mark.parametrize("combine", COMBINES)
def test_a_row_with_no_attended_key_gives_no_warning(combine):
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((3, 8)),
        rng.standard_normal((96, 8)),
        rng.standard_normal((96, 4)),
    )
    keep = np.ones((3, 96), bool)
    keep[0, :64] = False  # two dead splits for row 0
    keep[1] = False  # no key at all for row 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = split_bound("amla", q, k, v, 0.35, splits=3, block_n=32, combine=combine, mask=keep)
    assert np.all(np.isinf(e[1])) and np.all(np.isfinite(e[[0, 2]]))


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("variant", ["fa_fp32", "amla"])
def test_a_split_weight_below_fp64s_normal_range_is_covered(variant, combine):
    """Under the FP64 work format (``"exact"``) a split weight ``exp(m_s - M)`` more than
    708 nats below 1 is a float64 subnormal (0 below 744.44 nats): with ``|V| = 1e150``
    in that split the lost part is the whole error, which the split bound carries with
    float64's own spacing (numpy's exp is faithful there, and half the spacing is not a
    float64). Oracle: the exact output of two keys in mpmath at 80 digits."""
    pol = get_policy("exact")
    worst = 0.0
    for gap in (700.0, 741.0, 744.035, 744.6, 760.0):
        q = np.array([[1.0]])
        k = np.array([[-gap], [0.0]])  # scores -gap (split 0) and 0 (split 1), exact
        v = np.array([[1e150], [0.0]])
        res = flash.attention(
            q, k, v, variant, scale=1.0, block_n=1, splits=2, combine=combine, policy=pol
        )
        e = split_bound(variant, q, k, v, 1.0, splits=2, block_n=1, combine=combine, policy=pol)
        with mpmath.workdps(80):
            w = mpmath.exp(-mpmath.mpf(gap))
            exact = mpmath.mpf(1e150) * w / (1 + w)
            err = abs(mpmath.mpf(float(res.out[0, 0])) - exact)
            ratio = err / mpmath.mpf(float(e[0, 0]))
        assert ratio <= 1, (variant, combine, gap, float(ratio))
        worst = max(worst, float(ratio))
    # 744.035 nats: exp = 1.5 spacings, rounded by half a spacing; FlashMLA's term is one
    # spacing per unit |o_s|, CANN's three (``(l_s + 2) |o_s|`` with ``l_s = 1``; AMLA's
    # divided by its ``r^_min`` as well)
    assert worst > (0.1 if combine == "cann" else 0.45), worst


def test_a_split_bound_with_an_unbounded_term_gives_inf_without_a_warning():
    """A case the adversarial hunt found (cancelling V, scale 69, 4 splits, CANN combine): the
    sub-normal split-weight term met inf * 0; the bound must be +inf or finite there, never
    NaN, and raise no warning (the suite turns warnings into errors)."""
    import json
    from pathlib import Path

    z = np.load(Path(__file__).parent / "data" / "hunt_split_inf_times_zero.npz")
    meta = json.loads(str(z["meta"]))
    b = split_bound(
        meta["variant"],
        z["q"],
        z["k"],
        z["v"],
        meta["scale"],
        splits=meta["splits"],
        block_n=meta["block_n"],
        policy=meta["policy"],
        combine=meta["combine"],
    )
    assert not np.isnan(b).any()
