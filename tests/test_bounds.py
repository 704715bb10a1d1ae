"""The a priori bounds hold: every emulated variant's error against the certified reference
stays below its deterministic bound, on every workload and on random inputs; the bounds
grow the way their derivations say; the probabilistic bound is the tighter one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound
from amla_numerics.analysis.workloads import WORKLOADS, make_workload
from amla_numerics.formats import BF16
from amla_numerics.rounding import round_to
from amla_numerics.variants import VARIANTS
from tests.strategies import examples

HAZARD_FREE = [w for w in WORKLOADS if w != "adversarial"]


def _check(variant, q, k, v, scale, block_n, policy=None):
    ref = reference.attention(q, k, v, scale, method="auto")
    res = flash.attention(q, k, v, variant, scale=scale, block_n=block_n, policy=policy)
    out = np.asarray(res.out, dtype=np.float64)
    bound = a_priori_bound(
        variant, head_dim=q.shape[-1], kv_len=k.shape[-2], block_n=block_n, policy=policy
    )
    det = elementwise_bound(bound, q, k, v, scale)
    # clamp is informational (the bound covers it); the garbage classes must not occur
    assert not any(n for h, n in res.hazards.items() if h not in ("ok", "clamp")), res.hazards
    err = np.abs(out - ref)
    worst = np.unravel_index(np.argmax(err / det), err.shape)
    assert np.all(err <= det), (variant, worst, err[worst], det[worst])
    return err, det


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("workload", HAZARD_FREE)
def test_measured_error_within_the_deterministic_bound(variant, workload):
    w = make_workload(workload, head_dim=64, kv_len=1280, rows=4, seed=1)
    _check(variant, w.q, w.k, w.v, w.scale, 256)


@settings(max_examples=examples(15))
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.sampled_from([1, 3, 16, 64]),
    n=st.integers(1, 700),
    block_n=st.sampled_from([1, 7, 64, 256]),
    spread=st.sampled_from([0.1, 1.0, 8.0]),
    variant=st.sampled_from(VARIANTS),
)
def test_bound_holds_on_random_inputs(seed, d, n, block_n, spread, variant):
    rng = np.random.default_rng(seed)
    q = round_to(spread * rng.standard_normal((3, d)), BF16)
    k = round_to(rng.standard_normal((n, d)), BF16)
    v = round_to(rng.standard_normal((n, 5)) + 0.5, BF16)  # no all-zero column: no hazards
    _check(variant, q, k, v, d**-0.5, block_n)


def test_bounds_grow_with_length_and_shrink_with_block_size():
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((2, 32)),
        rng.standard_normal((4096, 32)),
        rng.standard_normal((4096, 8)),
    )
    med = {}
    for variant in ("fa_fp32", "amla", "amla_nocomp"):
        for n, b in ((1024, 512), (4096, 512), (4096, 128)):
            bd = a_priori_bound(variant, head_dim=32, kv_len=n, block_n=b)
            med[variant, n, b] = float(np.median(elementwise_bound(bd, q, k[:n], v[:n], 32**-0.5)))
        assert med[variant, 4096, 512] > med[variant, 1024, 512]  # more blocks, more rescales
        assert med[variant, 4096, 128] > med[variant, 4096, 512]
    # no compensation pays the full cof ratio (~2**-7) each rescale; compensation leaves about
    # c * 2**-7 * kappa(c) = 2**-8 of it at c = 1.5
    step = {
        v: a_priori_bound(v, head_dim=32, kv_len=4096).coefficient("rescale_step")
        for v in ("amla", "amla_nocomp")
    }
    assert 1.9 < step["amla_nocomp"] / step["amla"] < 2.1
    assert med["amla_nocomp", 4096, 512] > med["amla", 4096, 512]


def test_probabilistic_bound_is_below_the_deterministic_one():
    w = make_workload("random", head_dim=128, kv_len=4096, rows=2, seed=0)
    for variant in ("fa_fp32", "amla", "fa_bf16"):
        bd = a_priori_bound(variant, head_dim=128, kv_len=4096, block_n=128)
        det = elementwise_bound(bd, w.q, w.k, w.v, w.scale)
        prob = elementwise_bound(bd, w.q, w.k, w.v, w.scale, kind="probabilistic")
        assert np.all(prob <= det) and np.any(prob < det)


def test_the_cast_term_is_the_bf16_unit_roundoff():
    b = a_priori_bound("fa_fp32", head_dim=64, kv_len=512)
    assert b.coefficient("cast") == 2.0**-8
    assert a_priori_bound("fa_fp32", head_dim=64, kv_len=512, policy="exact").u_cast == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "fa_fp64", "head_dim": 64, "kv_len": 8}, "unknown variant"),
        ({"variant": "amla", "head_dim": 0, "kv_len": 8}, "head_dim"),
        ({"variant": "amla", "head_dim": 8, "kv_len": 8, "block_n": 0}, "block_n"),
        ({"variant": "amla", "head_dim": 8, "kv_len": 8, "c": -1.0}, "'c'"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    variant = kwargs.pop("variant")
    with pytest.raises(ValueError, match=match):
        a_priori_bound(variant, **kwargs)


def test_elementwise_bound_checks_its_inputs():
    b = a_priori_bound("amla", head_dim=8, kv_len=16)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="do not match"):
        elementwise_bound(
            b,
            rng.standard_normal((2, 8)),
            rng.standard_normal((17, 8)),
            rng.standard_normal((17, 4)),
            1.0,
        )
    with pytest.raises(ValueError, match="kind"):
        elementwise_bound(
            b,
            rng.standard_normal((2, 8)),
            rng.standard_normal((16, 8)),
            rng.standard_normal((16, 4)),
            1.0,
            kind="typical",
        )


@pytest.mark.parametrize("variant", ["fa_fp32", "amla", "lazy"])
@pytest.mark.parametrize(
    "changes", [{"exp": "poly"}, {"rowsum": "seq"}, {"p_cast": "fp16", "p_cast_rounding": "rne"}]
)
def test_bound_follows_the_policy(variant, changes):
    from amla_numerics.flash.policy import get_policy

    w = make_workload("peaky", head_dim=32, kv_len=700, rows=4, seed=2)
    _check(variant, w.q, w.k, w.v, w.scale, 128, get_policy("ascend").replace(**changes))


@pytest.mark.parametrize("preset", ["exact", "cann"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_bound_holds_under_every_preset(preset, variant):
    w = make_workload("drift", head_dim=16, kv_len=900, rows=3, seed=4)
    _check(variant, w.q, w.k, w.v, w.scale, 128, preset)


# --- the block FMA's constant (bounds.accumulation._matmul_gamma) against the model itself


def _dot_error_ratio(a, b, acc):
    from fractions import Fraction

    from amla_numerics.analysis.bounds.accumulation import _matmul_gamma
    from amla_numerics.flash.accumulate import matmul

    got = Fraction(float(matmul(a[None, :], b[:, None], acc)[0, 0]))
    exact = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True))
    mass = sum(abs(Fraction(float(x)) * Fraction(float(y))) for x, y in zip(a, b, strict=True))
    if mass == 0:
        return 0.0
    return float(abs(got - exact) / mass) / _matmul_gamma(acc, len(a), "fp32")


@pytest.mark.parametrize("preset", ["v100", "a100", "h100", "h100_fp8"])
@settings(max_examples=examples(40))
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 200),
    spread=st.sampled_from([0, 6, 20]),
    positive=st.booleans(),
)
def test_block_fma_gamma_bounds_the_model(preset, seed, n, spread, positive):
    """Exact (Fraction) error of one dot product <= _matmul_gamma * sum |a_k b_k|."""
    from amla_numerics.flash.accumulate import ACCUMULATION_PRESETS

    rng = np.random.default_rng(seed)
    a = round_to(rng.standard_normal(n) * np.exp2(rng.integers(-spread, 1, n)), BF16)
    b = round_to(rng.standard_normal(n), BF16)
    if positive:
        a, b = np.abs(a), np.abs(b)
    assert _dot_error_ratio(a, b, ACCUMULATION_PRESETS[preset]) <= 1.0


def test_reduced_accumulator_needs_its_own_constant():
    """A large accumulator and 63 terms just below its grid: every term is cut (the FP8
    accumulator keeps 13 fraction bits). The error (63/16 on 1028) is far above what an
    FP32 accumulator's 2 gamma_64 would allow, and within the acc_bits-aware constant."""
    from amla_numerics.analysis.bounds.accumulation import _accumulation_gamma
    from amla_numerics.flash.accumulate import ACCUMULATION_PRESETS

    acc = ACCUMULATION_PRESETS["h100_fp8"]
    a = np.array([1024.0] + [2.0**-4] * 63)
    b = np.ones(64)
    ratio = _dot_error_ratio(a, b, acc)
    assert 0.3 < ratio <= 1.0  # the constant is within a factor ~3 of this worst case
    rel = (63 / 16) / (1024 + 63 / 16)
    assert rel > 100 * _accumulation_gamma("block_fma", 64, 2.0**-24)


def test_fa_fp8_with_the_fp8_accumulator_is_within_its_bound():
    """fa_fp8 on a sink workload, E4M3 V, P V on H100's FP8 block FMA: measured <= bound;
    the bound's P V constant is the reduced accumulator's (not FP32's)."""
    import ml_dtypes

    from amla_numerics.analysis.sinks import sink_workload
    from amla_numerics.flash.accumulate import ACCUMULATION_PRESETS
    from amla_numerics.flash.policy import MatmulPolicy, get_policy

    w = sink_workload(8.0, head_dim=32, kv_len=1024, rows=4, seed=3)
    v = np.asarray(w.v, np.float64).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    for acc in ("h100", "h100_fp8"):
        for sp in (1.0, 448.0):
            pol = get_policy("ascend").replace(
                p_scale=sp, pv=MatmulPolicy("bf16", ACCUMULATION_PRESETS[acc], "fp32")
            )
            _check("fa_fp8", w.q, w.k, v, w.scale, 256, pol)
    b = a_priori_bound(
        "fa_fp8", head_dim=32, kv_len=1024, block_n=256, policy=pol
    )  # h100_fp8, S = 448
    assert b.pv_gamma > 8 * 33 * 2.0**-13 and b.pv_biased
