"""The FlashAttention emulator: exactness of every recurrence, hazards, masks, shapes, errors.

The oracle is independent of the package: attention evaluated with mpmath at 40 digits
(``fdot``/``exp``) on small shapes.
"""

from __future__ import annotations

import json

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics import flash, reference
from amla_numerics.exp2add import HAZARDS
from amla_numerics.flash import Accumulation, MatmulPolicy, get_policy
from amla_numerics.formats import get_format
from amla_numerics.variants import AMLA_VARIANTS, FP8_P_VARIANTS, VARIANTS
from tests.strategies import attention_inputs, examples
from tests.tolerances import tol

AMLA = AMLA_VARIANTS
EXACT_RTOL = tol("exact_policy")


def mp_attention(q, k, v, scale, keep=None):
    """Softmax attention at 40 digits, 2-D inputs; returns (out, lse, ref_abs) as float64.

    ``ref_abs[i, c] = sum_j p_ij |v_jc| / sum_j p_ij`` scales the tolerances (condition).
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    m_rows, n = q.shape[0], k.shape[0]
    out = np.full((m_rows, v.shape[1]), np.nan)
    ref_abs = np.full_like(out, np.nan)
    lse = np.full(m_rows, -np.inf)
    with mpmath.workdps(40):
        for i in range(m_rows):
            cols = [j for j in range(n) if keep is None or keep[i, j]]
            if not cols:
                continue
            s = [mpmath.fdot(list(q[i]), list(k[j])) * mpmath.mpf(scale) for j in cols]
            mx = max(s)
            p = [mpmath.exp(x - mx) for x in s]
            tot = mpmath.fsum(p)
            lse[i] = float(mx + mpmath.log(tot))
            for c in range(v.shape[1]):
                out[i, c] = float(mpmath.fdot(p, [v[j, c] for j in cols]) / tot)
                ref_abs[i, c] = float(mpmath.fdot(p, [abs(v[j, c]) for j in cols]) / tot)
    return out, lse, ref_abs


def _data(seed, m=3, n=37, dk=8, dv=5, mag=2.0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((m, dk)) * mag,
        rng.standard_normal((n, dk)) * mag,
        rng.standard_normal((n, dv)),
    )


# ---------------------------------------------------------------- exactness (policy "exact")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("block_n", [1, 5, 16, 37, 100])
def test_exact_policy_reproduces_reference(variant, block_n):
    q, k, v = _data(1)
    ref, lse, ref_abs = mp_attention(q, k, v, 0.3)
    res = flash.attention(q, k, v, variant, scale=0.3, block_n=block_n, policy="exact")
    assert res.out.dtype == np.float64 and res.out.shape == ref.shape
    assert np.all(np.abs(res.out - ref) <= EXACT_RTOL * ref_abs)
    assert np.allclose(res.lse, lse, rtol=EXACT_RTOL, atol=0)
    assert all(v_ == 0 for key, v_ in res.hazards.items() if key != "ok")


@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_policy_with_causal_mask_and_batch(variant):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 4, 6))
    k = rng.standard_normal((2, 11, 6))
    v = rng.standard_normal((1, 11, 3))  # broadcast over the batch
    res = flash.attention(q, k, v, variant, block_n=4, policy="exact", causal=True)
    keep = np.arange(11)[None, :] <= np.arange(4)[:, None] + 7
    for b in range(2):
        ref, _, ref_abs = mp_attention(q[b], k[b], v[0], 1 / np.sqrt(6), keep)
        assert np.all(np.abs(res.out[b] - ref) <= EXACT_RTOL * ref_abs)


def test_exact_policy_with_rounded_r_needs_the_compensation():
    """With r^ = bf16(r) but exact arithmetic, the cof ratio alone restores the reference."""
    q, k, v = _data(4, n=64, mag=1.0)
    k = k * 0.3 + np.linspace(0, 4, 64)[:, None]  # the max moves in every block
    q = np.abs(q) + 1.0
    ref, _, ref_abs = mp_attention(q, k, v, 0.5)
    pol = get_policy("exact").replace(r_cast="bf16", r_cast_rounding="rna")
    for variant in ("amla", "amla_exactcomp", "amla_guarded"):
        res = flash.attention(q, k, v, variant, scale=0.5, block_n=8, policy=pol)
        assert np.all(np.abs(res.out - ref) <= EXACT_RTOL * ref_abs)
    nocomp = flash.attention(q, k, v, "amla_nocomp", scale=0.5, block_n=8, policy=pol)
    assert (
        np.max(np.abs(nocomp.out - ref) / ref_abs) > 1e6 * EXACT_RTOL
    )  # r^ errors left uncompensated


@given(
    data=attention_inputs(max_m=3, max_n=30, max_dk=8, max_dv=4),
    block_n=st.integers(1, 32),
    variant=st.sampled_from(VARIANTS),
)
@settings(max_examples=examples(40))
def test_exact_policy_property(data, block_n, variant):
    q, k, v, scale = data
    ref, _, ref_abs = mp_attention(q, k, v, scale)
    res = flash.attention(q, k, v, variant, scale=scale, block_n=block_n, policy="exact")
    # float64 scores carry |ds| <= (Dk + 2) 2**-52 scale sum|q k|, which exp turns into a
    # relative error of P: the only term that grows with the score magnitude
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    ds = (q.shape[1] + 2) * 2.0**-52 * scale * np.max(np.abs(q64) @ np.abs(k64).T)
    assert np.all(np.abs(res.out - ref) <= (EXACT_RTOL + 4 * ds) * ref_abs + 1e-300)


# ---------------------------------------------------------------- the FP32/BF16 policy


@given(
    data=attention_inputs(max_m=3, max_n=40, max_dk=12, max_dv=4),
    block_n=st.integers(1, 40),
    variant=st.sampled_from(VARIANTS),
)
@settings(max_examples=examples(40))
def test_ascend_policy_is_close_deterministic_and_well_formed(data, block_n, variant):
    q, k, v, scale = data
    ref, _lse, ref_abs = mp_attention(q, k, v, scale)
    res = flash.attention(q, k, v, variant, scale=scale, block_n=block_n, trace=True)
    again = flash.attention(q, k, v, variant, scale=scale, block_n=block_n, trace=True)
    assert res.out.dtype == np.float32 and res.lse.dtype == np.float64
    assert np.array_equal(res.out, again.out, equal_nan=True)
    assert set(HAZARDS) <= set(res.hazards)
    n_blocks = 1 if variant == "naive" else -(-k.shape[0] // block_n)
    assert res.trace.m.shape == (n_blocks, q.shape[0]) and res.trace.N.dtype == np.int32
    assert not res.trace.rescaled[0].any()
    bad = sum(v_ for key, v_ in res.hazards.items() if key != "ok")
    if variant not in AMLA:
        assert bad == 0
    if variant in AMLA and variant != "amla_guarded" and bad:
        return  # hazards are reported; their garbage is tested separately
    # BF16 P (2**-8 relative), FP32 elsewhere; per block where the max moves: fa_bf16 rounds O
    # to BF16 (2**-9), AMLA's eps misses the cof ratio by up to |ratio - 1| / 2 <= 2**-9
    # (amla_nocomp: by |ratio - 1| <= 2**-8); exact compensation and FP32 r: FP32 level only
    per_block = 2.0**-8 if variant in ("fa_bf16", "amla", "amla_nocomp", "amla_guarded") else 2e-5
    tol = (2.0**-6 + n_blocks * per_block) * ref_abs + 1e-30
    if variant in FP8_P_VARIANTS:  # E4M3 P: u relative, half a subnormal absolute (x 1.42 for A)
        e4 = get_format("e4m3")
        tol = tol + 2 * e4.unit_roundoff * ref_abs
        tol = tol + 1.5 * k.shape[0] * (e4.min_subnormal / 2) * np.max(np.abs(v), axis=0)
    assert np.all(np.abs(res.out - ref) <= tol)


def test_amla_without_residual_equals_fa_fp32_bitwise_when_the_max_is_zero_in_every_block():
    """m_j = 0 in every block: n = 0, r = r^ = 1, dn = 0 (and eps = 0 without the bias)."""
    rng = np.random.default_rng(2)
    n, d = 40, 6
    q = np.zeros((3, d))
    q[:, 0] = 1.0
    k = rng.standard_normal((n, d)).astype(ml_dtypes.bfloat16).astype(float)
    k[:, 0] = -np.abs(k[:, 0]) - 0.25
    k[::8, 0] = 0.0  # one key with score 0 in every 8-key block
    v = rng.standard_normal((n, 4))
    pol = get_policy("ascend").replace(eps_bias=0.0)
    fa = flash.attention(q, k, v, "fa_fp32", scale=1.0, block_n=8, policy=pol)
    for variant in ("amla", "amla_nocomp", "amla_exactcomp", "amla_fp32r", "amla_guarded"):
        am = flash.attention(q, k, v, variant, scale=1.0, block_n=8, policy=pol, trace=True)
        assert np.all(am.trace.n == 0) and np.all(am.trace.N == 0)
        assert np.array_equal(am.out, fa.out)


def test_amla_with_fp32_r_and_no_eps_matches_fa_fp32_up_to_rounding_order():
    """r^ = r, eps = 0, no P cast: AMLA differs from fa_fp32 only in FP32 rounding order."""
    q, k, v = _data(9, m=4, n=96, dk=8, dv=6, mag=3.0)
    ref, _, ref_abs = mp_attention(q, k, v, 0.4)
    mm32 = MatmulPolicy("fp32", Accumulation("exact"), "fp32")
    pol = get_policy("ascend").replace(p_cast=None, r_cast=None, eps_bias=0.0, qk=mm32, pv=mm32)
    fa = flash.attention(q, k, v, "fa_fp32", scale=0.4, block_n=8, policy=pol, trace=True)
    am = flash.attention(q, k, v, "amla_nocomp", scale=0.4, block_n=8, policy=pol, trace=True)
    n_blocks = 12
    m_max = np.max(np.abs(fa.trace.m))
    u = 2.0**-24
    # per block: a (1/2 ulp), a*O, +PV on one side; P*r, r's argument (|m| u), +PV on the other
    tol = ((6 * n_blocks + 10) + 4 * m_max) * u * ref_abs
    assert np.all(np.abs(am.out - fa.out) <= tol)
    assert np.all(np.abs(fa.out - ref) <= tol)


# ---------------------------------------------------------------- hazards


def _zero_column_case():
    """Scores grow along the keys (the max moves every block) and V has an all-zero column."""
    rng = np.random.default_rng(11)
    n, d = 96, 8
    q = np.ones((4, d)).astype(ml_dtypes.bfloat16).astype(float)
    k = (
        (rng.standard_normal((n, d)) * 0.3 + np.linspace(0, 3, n)[:, None])
        .astype(ml_dtypes.bfloat16)
        .astype(float)
    )
    v = rng.standard_normal((n, 5)).astype(ml_dtypes.bfloat16).astype(float)
    v[:, 2] = 0.0
    return q, k, v


def test_zero_column_makes_amla_report_zero_hazards_and_garbage():
    q, k, v = _zero_column_case()
    res = flash.attention(q, k, v, "amla", block_n=16, trace=True)
    assert res.hazards["zero"] > 0
    col = res.out[:, 2]
    assert not np.all(col == 0)  # the honest garbage is visible
    assert np.any(~np.isfinite(col) | (np.abs(col) > 1e10))
    # the other columns are unaffected (normal O words)
    ref, _, ref_abs = mp_attention(q, k, v, 1 / np.sqrt(8))
    others = [0, 1, 3, 4]
    assert np.all(np.abs(res.out[:, others] - ref[:, others]) <= 2.0**-6 * ref_abs[:, others])


def test_cann_policy_clip_hides_the_garbage_but_not_the_count():
    q, k, v = _zero_column_case()
    res = flash.attention(q, k, v, "amla", block_n=16, policy="cann")
    assert res.hazards["zero"] > 0
    assert np.all(np.isfinite(res.out)) and np.all(np.abs(res.out[:, 2]) < 1e-30)


def test_guarded_is_finite_exact_zero_and_as_accurate_as_fa_fp32():
    q, k, v = _zero_column_case()
    ref, _, _ = mp_attention(q, k, v, 1 / np.sqrt(8))
    g = flash.attention(q, k, v, "amla_guarded", block_n=16)
    fa = flash.attention(q, k, v, "fa_fp32", block_n=16)
    assert g.hazards["zero"] > 0  # detected, then repaired
    assert np.all(np.isfinite(g.out)) and np.all(g.out[:, 2] == 0)
    err_g = np.linalg.norm(g.out - ref) / np.linalg.norm(ref)
    err_fa = np.linalg.norm(fa.out - ref) / np.linalg.norm(ref)
    assert err_g <= 2 * err_fa


def test_underflow_and_subnormal_hazards_are_counted_and_guarded():
    """Tiny V values put O near the bottom of the FP32 range; a big max jump underflows it."""
    n, d = 32, 4
    q = np.ones((2, d))
    k = np.zeros((n, d))
    k[16:] = 6.0  # the max jumps by 6 * 4 * 0.5 = 12 nats at block 1: dn = -17
    v = np.full((n, 3), 2.0**-120)
    v[:, 1] = 2.0**-130  # subnormal in BF16/FP32
    res = flash.attention(q, k, v, "amla", scale=0.5, block_n=16)
    assert res.hazards["underflow"] + res.hazards["subnormal"] + res.hazards["sign_borrow"] > 0
    g = flash.attention(q, k, v, "amla_guarded", scale=0.5, block_n=16)
    fa = flash.attention(q, k, v, "fa_fp32", scale=0.5, block_n=16)
    assert np.all(np.isfinite(g.out))
    ref, _, _ = mp_attention(q, k, v, 0.5)
    assert np.all(np.abs(g.out - ref) <= 2 * np.abs(fa.out - ref) + 2.0**-8 * np.abs(ref))


def test_fully_masked_rows_give_nan_and_minus_inf_lse():
    q, k, v = _data(3, m=3, n=20)
    keep = np.ones((3, 20), bool)
    keep[1] = False
    for variant in ("fa_fp32", "lazy", "naive", "amla_guarded"):
        for pol in ("exact", "ascend"):
            res = flash.attention(q, k, v, variant, block_n=8, mask=keep, policy=pol)
            assert np.all(np.isnan(res.out[1])) and res.lse[1] == -np.inf
            assert np.all(np.isfinite(res.out[[0, 2]]))


def test_float_minus_inf_mask_equals_boolean_mask():
    q, k, v = _data(5, m=3, n=20)
    keep = np.random.default_rng(0).random((3, 20)) < 0.6
    keep[:, 0] = True
    fmask = np.where(keep, 0.0, -np.inf)
    a = flash.attention(q, k, v, "amla", block_n=8, mask=keep)
    b = flash.attention(q, k, v, "amla", block_n=8, mask=fmask)
    assert np.array_equal(a.out, b.out)


# ---------------------------------------------------------------- lazy, trace, config, MLA


def test_lazy_rescales_only_on_big_jumps():
    n, d = 48, 2
    q = np.ones((1, d))
    k = np.zeros((n, d))
    k[16:32] = 1.0  # block 1: max +2 (scale 1): 2.9 in log2 units
    k[32:] = 5.0  # block 2: max +8 more: 11.5 log2 units
    v = np.random.default_rng(0).standard_normal((n, 3))
    res = flash.attention(q, k, v, "lazy", scale=1.0, block_n=16, trace=True, tau=8.0)
    assert res.trace.rescaled[:, 0].tolist() == [False, False, True]
    assert res.trace.m[:, 0].tolist() == [0.0, 0.0, 10.0]
    eager = flash.attention(q, k, v, "lazy", scale=1.0, block_n=16, trace=True, tau=0.0)
    assert eager.trace.rescaled[:, 0].tolist() == [False, True, True]
    ref, _, ref_abs = mp_attention(q, k, v, 1.0)
    assert np.all(np.abs(res.out - ref) <= 2.0**-6 * ref_abs)


def test_trace_and_config():
    q, k, v = _data(6, n=40)
    res = flash.attention(q, k, v, "amla", block_n=16, trace=True, c=1.4)
    t = res.trace
    assert t.m.shape == t.n.shape == t.N.shape == t.rescaled.shape == (3, 3)
    assert t.rescaled.tolist() == [[False] * 3, [True] * 3, [True] * 3]
    assert np.all(t.N[0] == 0) and np.all(t.dn[0] == 0) and np.all(t.dn <= 0)
    assert np.all(np.diff(t.m, axis=0) >= 0)
    cfg = json.loads(json.dumps(res.config))
    assert cfg["variant"] == "amla" and cfg["c"] == 1.4 and cfg["policy"]["name"] == "ascend"
    assert flash.Policy.from_dict(cfg["policy"]) == get_policy("ascend")
    assert flash.attention(q, k, v, "fa_fp32").trace is None


def test_mla_preset_shapes():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 4, flash.MLA_DK)).astype(ml_dtypes.bfloat16)
    kv = rng.standard_normal((2, 40, flash.MLA_DK)).astype(ml_dtypes.bfloat16)
    res = flash.mla_attention(q, kv, "amla", block_n=16)
    assert res.out.shape == (2, 4, flash.MLA_DV)
    direct = flash.attention(q, kv, kv[..., :512], "amla", block_n=16, scale=1 / np.sqrt(192))
    assert np.array_equal(res.out, direct.out)


# ---------------------------------------------------------------- bad input


def test_unknown_variant_lists_the_valid_ones():
    q, k, v = _data(0)
    with pytest.raises(ValueError, match="valid: naive, fa_fp32"):
        flash.attention(q, k, v, "fa_fp16")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_n": 0}, "block_n"),
        ({"block_n": 2.5}, "block_n"),
        ({"policy": "tpu"}, "policy"),
        ({"scale": float("nan")}, "scale"),
        ({"tau": -1.0}, "tau"),
        ({"mask": np.ones((2, 2), bool)}, "mask"),
        ({"mask": np.full((3, 37), np.nan)}, "mask"),
        ({"mask": np.full((3, 37), np.inf)}, "mask"),
    ],
)
def test_bad_options(kwargs, match):
    q, k, v = _data(0)
    with pytest.raises(ValueError, match=match):
        flash.attention(q, k, v, "amla", **kwargs)


def test_bad_shapes_and_values():
    q, k, v = _data(0)
    with pytest.raises(ValueError, match="Dk"):
        flash.attention(q[:, :4], k, v)
    with pytest.raises(ValueError, match="number of keys"):
        flash.attention(q, k, v[:5])
    with pytest.raises(ValueError, match="broadcast"):
        flash.attention(np.ones((2, 3, 8)), np.ones((3, 5, 8)), np.ones((3, 5, 2)))
    with pytest.raises(ValueError, match="'q'"):
        flash.attention(np.ones(8), k, v)
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        flash.attention(bad, k, v)
    with pytest.raises(TypeError, match="causal"):
        flash.attention(q, k, v, causal="yes")


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "poly"},
        {"rowsum": "seq"},
        {"rowsum": "exact"},
        {"p_cast": "fp16", "r_cast": "fp16", "p_cast_rounding": "rne"},
        {
            "qk": MatmulPolicy("bf16", Accumulation("fp32_seq")),
            "pv": MatmulPolicy("bf16", Accumulation("pairwise")),
        },
        {"pv": MatmulPolicy("bf16", flash.ACCUMULATION_PRESETS["v100"])},
        {"dn_clamp": None, "eps_bias": 0.0},
    ],
    ids=[
        "poly_exp",
        "seq_rowsum",
        "exact_rowsum",
        "fp16_casts",
        "seq_pairwise_mm",
        "v100_fma",
        "no_clamp",
    ],
)
@pytest.mark.parametrize("variant", ["fa_fp32", "amla", "lazy"])
def test_other_policies_run_and_stay_accurate(changes, variant):
    q, k, v = _data(8, m=3, n=50, dk=8, dv=4)
    q, k = (x.astype(ml_dtypes.bfloat16).astype(float) for x in (q, k))
    ref, _, ref_abs = mp_attention(q, k, v.astype(ml_dtypes.bfloat16).astype(float), 0.3)
    pol = get_policy("ascend").replace(**changes)
    res = flash.attention(q, k, v, variant, scale=0.3, block_n=16, policy=pol)
    assert res.config["policy"] == pol.to_dict()
    # BF16 P (2**-8), the poly exp (|x| 2**-24) and truncating FMA units (2**-20 per add)
    assert np.all(np.abs(res.out - ref) <= 2.0**-6 * ref_abs)


def test_exact_policy_agrees_with_the_package_reference():
    """The other engineer's reference (if present) as a second oracle."""
    reference = pytest.importorskip("amla_numerics.reference")
    q, k, v = _data(12, m=3, n=45, dk=8, dv=4)
    ref = np.asarray(reference.attention(q, k, v, 0.35), dtype=np.float64)
    _, _, ref_abs = mp_attention(q, k, v, 0.35)
    for variant in VARIANTS:
        res = flash.attention(q, k, v, variant, scale=0.35, block_n=10, policy="exact")
        assert np.all(np.abs(res.out - ref) <= EXACT_RTOL * ref_abs)


def test_fully_masked_row_under_unguarded_amla_is_counted_and_non_finite():
    q, k, v = _data(3, m=3, n=20)
    keep = np.ones((3, 20), bool)
    keep[1] = False
    res = flash.attention(q, k, v, "amla", block_n=8, mask=keep)
    # first add: O = 0 (zero), N = 8 leaves a subnormal; second add: subnormal
    assert res.hazards["zero"] == v.shape[1] and res.hazards["subnormal"] == v.shape[1]
    assert not np.any(np.isfinite(res.out[1]))
    assert np.all(np.isfinite(res.out[[0, 2]]))


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, np.float32, np.float64])
def test_non_finite_inputs_are_refused_in_every_dtype(dtype):
    q, k, v = (x.astype(dtype) for x in _data(0))
    for bad in (np.inf, -np.inf, np.nan):
        kk = k.copy()
        kk[3, 2] = bad
        with pytest.raises(ValueError, match="'k' contains NaN or infinite"):
            flash.attention(q, kk, v)
        with pytest.raises(ValueError, match="'q' contains NaN or infinite"):
            flash.attention(np.asfortranarray(np.where(np.arange(8) == 1, bad, q)), k, v)


FP32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("variant", VARIANTS)
def test_scale_outside_the_work_format_is_refused(variant):
    # finite scales that FP32 rounds to inf, or holds only as a subnormal (relative error
    # unbounded): each gave NaN or a silently wrong output
    q, k, v = (x.astype(np.float32) for x in _data(1))
    for scale in (1e39, -1e39, FP32_MAX * 1.0000001, 1e-40, -(2.0**-127)):
        if variant == "fa4" and scale < 0:
            continue  # refused as negative (below)
        with pytest.raises(
            ValueError, match=r"argument 'scale'.*does not fit the work format fp32"
        ):
            flash.attention(q, k, v, variant, scale=scale, block_n=8)
    # the edges of the normal range are valid, and FP64 work takes what FP32 cannot
    for scale in (2.0**-126, 1e-30) + (() if variant == "fa4" else (FP32_MAX, 1e38)):
        flash.attention(q, k, v, variant, scale=scale, block_n=8)
    if variant != "fa4":
        out = flash.attention(q, k, v, variant, scale=1e39, block_n=8, policy="exact").out
        assert not np.isnan(out).any()


def test_fa4_scale_times_log2e_must_fit_and_be_positive():
    q, k, v = (x.astype(np.float32) for x in _data(2))
    log2e = 1.4426950408889634
    edge = FP32_MAX / log2e  # scale * log2 e at FP32's largest finite value
    with pytest.raises(ValueError, match=r"scale \* log2\(e\) = .* does not fit"):
        flash.attention(q, k, v, "fa4", scale=edge * 1.001)
    flash.attention(q, k, v, "amla", scale=edge * 1.001)  # the others take it
    for scale in (-0.25, -1.0):  # fa4 takes the running max of the unscaled scores
        with pytest.raises(ValueError, match="'scale' must be positive for variant 'fa4'"):
            flash.attention(q, k, v, "fa4", scale=scale)
        ref = reference.attention(q, k, v, scale)
        out = flash.attention(q, k, v, "fa_fp32", scale=scale).out  # the others take it
        assert np.abs(out - ref).max() < 1e-2


@pytest.mark.parametrize(
    ("in_format", "big", "dtype"),
    [("fp16", 65520.0, np.float32), ("fp16", 1e5, np.float64), ("bf16", FP32_MAX, np.float32)],
)
def test_inputs_that_overflow_the_input_format_are_refused(in_format, big, dtype):
    # 65520 is the first value FP16 (rne) rounds to inf; FP32's largest rounds to inf in BF16
    mm = MatmulPolicy(in_format)
    pol = get_policy("ascend").replace(qk=mm, pv=mm)
    q, k, v = (x.astype(dtype) for x in _data(3))
    for name in ("q", "k", "v"):
        args = {"q": q.copy(), "k": k.copy(), "v": v.copy()}
        args[name][1, 2] = -big
        with pytest.raises(ValueError, match=f"argument '{name}' overflows the matrix unit"):
            flash.attention(args["q"], args["k"], args["v"], "amla", policy=pol)
    ok = {"q": q.copy(), "k": k.copy(), "v": v.copy()}
    ok["v"][1, 2] = 65504.0 if in_format == "fp16" else 3.3e38  # the largest finite: valid
    assert np.isfinite(flash.attention(ok["q"], ok["k"], ok["v"], "fa_fp32", policy=pol).out).all()


@pytest.mark.parametrize("variant", AMLA_VARIANTS)
@pytest.mark.parametrize("bias", [-709.5, -800.0, -1e4])
def test_amla_exact_policy_after_a_fully_masked_first_block(variant, bias):
    # the first block has no key (m = -inf, so n = 0 and O = 0); the next blocks' scores sit
    # below -709, so dn = n exceeds float64's exponent range: 2**dn alone overflows, O * 2**dn
    # does not (O = 0). Nothing overflows, nothing is flagged, and the output is the
    # reference's to the exact policy's accuracy.
    q, k, v = _data(5, m=2, n=12, dk=4, dv=3)
    mask = np.full((2, 12), bias)
    mask[:, :4] = -np.inf
    res = flash.attention(q, k, v, variant, block_n=4, policy="exact", mask=mask, scale=0.5)
    ref = reference.attention(q, k, v, 0.5, mask=mask)
    assert np.isfinite(res.out).all()
    assert not any(res.hazards[h] for h in res.hazards if h not in ("ok",))
    assert np.abs(res.out - ref).max() <= 1e-12 * np.abs(v).max()


def test_value_view_of_keys_gives_the_same_bits_as_a_copy():
    rng = np.random.default_rng(13)
    kv = rng.standard_normal((40, 12)).astype(ml_dtypes.bfloat16)
    q = rng.standard_normal((3, 12)).astype(ml_dtypes.bfloat16)
    for variant in ("fa_fp32", "amla"):
        view = flash.attention(q, kv, kv[:, :5], variant, block_n=16)
        copy = flash.attention(q, kv, np.array(kv[:, :5]), variant, block_n=16)
        assert np.array_equal(view.out, copy.out)
        other = flash.attention(q, kv, kv[:, 2:7], variant, block_n=16)  # not the leading columns
        assert np.array_equal(
            other.out, flash.attention(q, kv, np.array(kv[:, 2:7]), variant, block_n=16).out
        )


def test_value_view_of_keys_with_an_inexact_qk_and_an_exact_pv_model():
    """V = K[..., :Dv] when only the P V product takes the exact accumulation model (no
    statistics of K are gathered): the same bits as a copy of V."""
    rng = np.random.default_rng(14)
    kv = rng.standard_normal((40, 12)).astype(ml_dtypes.bfloat16)
    q = rng.standard_normal((3, 12)).astype(ml_dtypes.bfloat16)
    pol = get_policy("ascend").replace(
        name="qk_fp32_seq", qk=MatmulPolicy("bf16", Accumulation("fp32_seq"))
    )
    assert pol.pv.accumulation.model == "exact"
    for variant in ("fa_fp32", "amla"):
        view = flash.attention(q, kv, kv[:, :5], variant, block_n=16, policy=pol)
        copy = flash.attention(q, kv, np.array(kv[:, :5]), variant, block_n=16, policy=pol)
        assert np.array_equal(view.out, copy.out)
        assert np.array_equal(view.lse, copy.lse)


def test_additive_bias_mask_has_the_reference_meaning():
    """A float mask is an additive bias (finite or -inf), in the emulator as in the reference:
    under the "exact" policy the emulator's recurrences equal the certified reference."""
    q, k, v = _data(4)
    rng = np.random.default_rng(4)
    bias = rng.standard_normal((3, 37)) * 3.0
    bias[:, 5] = -np.inf
    ref = reference.attention(q, k, v, None, mask=bias)
    for variant in ("fa_fp32", "amla"):
        got = flash.attention(q, k, v, variant, block_n=8, mask=bias, policy="exact").out
        np.testing.assert_allclose(got, ref, rtol=EXACT_RTOL, atol=0)
    # the boolean keep-mask and the -inf bias mean the same thing, bit for bit
    keep = np.isfinite(bias)
    a = flash.attention(q, k, v, "amla", block_n=8, mask=keep).out
    b = flash.attention(q, k, v, "amla", block_n=8, mask=np.where(keep, 0.0, -np.inf)).out
    assert a.tobytes() == b.tobytes()
