"""compare / assert_attention_close: oracles are the certified correctly rounded reference
(its FP32 rounding is within 1 u_fp32 of sum p|v|, its BF16 rounding is 0 BF16 ULPs off) and
the emulator's own outputs (each identified as its variant bit for bit)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.reference.rounded import rounded_reference
from amla_numerics.testing import assert_attention_close, compare
from amla_numerics.variants import VARIANTS

BF16 = ml_dtypes.bfloat16


def _inputs(seed=0, m=4, n=384, dk=64, dv=32, dtype=BF16, lead=()):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((*lead, m, dk)).astype(dtype)
    k = rng.standard_normal((n, dk)).astype(dtype)
    v = rng.standard_normal((n, dv)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", [BF16, ml_dtypes.float8_e4m3fn, np.float32])
def test_correctly_rounded_outputs_meet_the_tightest_limits(dtype):
    q, k, v = _inputs(dtype=dtype)
    ref = rounded_reference(q, k, v)
    c32 = compare(ref.rounded["fp32"], q, k, v, bit_match=False)
    # |rn32(x) - x| <= 2**-24 |x| <= 2**-24 sum p|v|: at most 1 u_fp32 (+ the float64 ref)
    assert c32.metrics.cond_err_max <= 1.0 + 1e-6
    assert c32.metrics.bf16_out_max_ulp == 0  # rne(rn32(x)) = rne(x) away from ties
    cbf = compare(ref.rounded["bf16"], q, k, v, bit_match=False)
    assert cbf.metrics.bf16_out_max_ulp == 0 and cbf.metrics.bf16_out_incorrect_frac == 0
    assert cbf.metrics.cond_err_max <= 2.0**16 + 1e-3  # half a BF16 ULP of |x| <= 2**-8|x|
    assert_attention_close(ref.rounded["fp32"], q, k, v, max_cond_err=1.0 + 1e-6, max_bf16_ulp=0)


def test_a_wrong_element_is_found_and_named():
    q, k, v = _inputs(lead=(2, 3))  # leading dims: q (2, 3, M, Dk) against shared k, v
    out = rounded_reference(q, k, v).rounded["fp32"].copy()
    bad = (1, 2, 3, 17)
    out[bad] = np.nextafter(out[bad], np.float32(np.inf), dtype=np.float32) * np.float32(1 + 2**-10)
    c = compare(out, q, k, v, bit_match=False)
    assert c.worst[0].index == bad == c.worst_index
    assert c.worst[0].out == float(out[bad])
    assert c.metrics.cond_err_max > 100  # 2**-10 |out| relative, |out| a fraction of mag
    with pytest.raises(AssertionError) as info:
        assert_attention_close(out, q, k, v, max_cond_err=2.0)
    msg = str(info.value)
    assert "Mismatched elements: 1 / 768" in msg
    assert f"index {bad}" in msg and "cond_err_max measured" in msg and "> limit 2" in msg


def test_nonfinite_output_is_a_measured_failure():
    q, k, v = _inputs()
    out = rounded_reference(q, k, v).rounded["fp32"].copy()
    out[0, 0] = np.nan
    out[1, 5] = np.inf
    c = compare(out, q, k, v, bit_match=False)
    assert c.metrics.n_nonfinite == 2 and c.hazards["nonfinite_out"] == 2
    assert math.isinf(c.metrics.cond_err_max)
    assert {w.index for w in c.worst[:2]} == {(0, 0), (1, 5)}
    assert [f.metric for f in c.failures({})] == ["n_nonfinite"]
    with pytest.raises(AssertionError, match="Mismatched elements: 2 / 128"):
        assert_attention_close(out, q, k, v, max_cond_err=1e9)


def test_emulator_outputs_are_identified_as_their_variant_bit_for_bit():
    q, k, v = _inputs(n=640)
    outs = {var: flash.attention(q, k, v, var, block_n=128).out for var in VARIANTS}
    for var, out in outs.items():
        c = compare(out, q, k, v, block_n=128)
        assert c.bit_match[var] == 1.0, var
        same = [
            w for w, o in outs.items() if np.array_equal(o.view(np.uint32), out.view(np.uint32))
        ]
        assert c.nearest_variant in same, (var, c.nearest_variant)
        if len(same) == 1:
            assert c.nearest_variant == var
        # written as BF16, the cast output still matches its variant exactly
        cb = compare(out.astype(BF16), q, k, v, block_n=128, bit_match=[var])
        assert cb.bit_match == {var: 1.0}
    # a float32 numpy kernel matches no variant exactly but is nearest to an FP32 one
    c = compare(rounded_reference(q, k, v).rounded["fp32"], q, k, v, block_n=128)
    assert max(c.bit_match.values()) < 1.0


def test_named_variant_adds_its_bound_and_hazards():
    q, k, v = _inputs(n=512)
    v = v.copy()
    v[:, 0] = 0  # a zero V column: AMLA's zero-operand hazard
    out = flash.attention(q, k, v, "fa_fp32", block_n=128).out
    c = compare(out, q, k, v, variant="fa_fp32", block_n=128, bit_match=False)
    assert c.bound_violations == 0 and 0 <= c.bound_ratio <= 1
    assert c.bound_cond_max >= c.metrics.cond_err_max
    assert c.hazards["zero_v_columns"] == 1
    assert not math.isnan(c.worst[0].bound)


def test_mask_lse_and_shapes():
    q, k, v = _inputs(m=3, n=256)
    mask = np.ones((3, 256), bool)
    mask[1, :200] = False
    ref = rounded_reference(q, k, v, mask=mask)
    c = compare(ref.rounded["fp32"], q, k, v, mask=mask, lse=ref.lse, bit_match=False)
    assert c.metrics.cond_err_max <= 1.0 + 1e-6 and c.metrics.lse_err_max == 0
    with pytest.raises(ValueError, match=r"out \(3, 31\) should be \(3, 32\)"):
        compare(np.zeros((3, 31), np.float32), q, k, v)
    with pytest.raises(ValueError, match=r"k .* and v .* differ in N"):
        compare(np.zeros((3, 32), np.float32), q, k, v[:10])
    with pytest.raises(ValueError, match=r"lse \(4,\) should be \(3,\)"):
        compare(ref.rounded["fp32"], q, k, v, lse=np.zeros(4))
    with pytest.raises(TypeError, match="argument 'out' must be a float array"):
        compare(np.zeros((3, 32), np.int32), q, k, v)


# -- the default rule (amla_numerics.testing.rule) ----------------------------------------


def test_rule_ratios_against_a_constructed_schedule_error():
    from amla_numerics.testing.rule import schedule_rule

    rng = np.random.default_rng(3)
    ref = rng.standard_normal((8, 16))
    mag = np.abs(ref) + 1.0
    d = rng.choice([-1.0, 1.0], ref.shape) * mag * 2.0**-12  # 4096 u_fp32 everywhere
    sched = ref + d
    # float64 output: the allowance (1 ULP of float64 + 2 FP32 roundings of |ref| <= mag)
    # is at most 2 u_fp32: 1 part in 4096 of the schedule's error
    at = schedule_rule(ref + 1.9 * d, ref, mag, sched)
    assert at.max_ratio == pytest.approx(1.9 / 2.0, rel=1e-3)
    assert at.rms_ratio == pytest.approx(1.9 / 1.5, rel=1e-3) and not at.passed
    assert len(at.reasons) == 1 and at.reasons[0].startswith("RMS error")
    over = schedule_rule(ref + 2.1 * d, ref, mag, sched)
    assert over.max_ratio == pytest.approx(2.1 / 2.0, rel=1e-3)
    assert over.reasons[0].startswith("an element's error is 1.05 x its limit")
    ok = schedule_rule(ref + 1.4 * d, ref, mag, sched)
    assert ok.passed and ok.rms_ratio == pytest.approx(1.4 / 1.5, rel=1e-3)
    loose = schedule_rule(ref + 1.9 * d, ref, mag, sched, rms_factor=2.0)
    assert loose.passed
    with pytest.raises(ValueError, match="argument 'max_factor' must be a number >= 1"):
        schedule_rule(ref, ref, mag, sched, max_factor=0.5)


def test_rule_allows_one_output_ulp_and_no_more():
    from amla_numerics.testing.rule import schedule_rule

    ref = np.array([[0.3, -0.7, 0.1]])
    mag = np.ones_like(ref)
    r32 = ref.astype(np.float32)
    exact = schedule_rule(r32, ref, mag, ref)  # the schedule makes no error at all
    assert exact.passed
    # allowed: 1 ULP + 2 u_fp32 |ref| <= 2 ULP; 3.5 ULP or more off is over
    far = r32
    for _ in range(4):
        far = np.nextafter(far, np.float32(9))
    four = schedule_rule(far, ref, mag, ref)
    assert not four.passed and four.max_ratio > 1
    with pytest.raises(ValueError, match="argument 'rms_factor'"):
        schedule_rule(r32, ref, mag, ref, rms_factor=True)


@pytest.mark.parametrize(
    ("make", "sentence"),
    [
        (lambda o: np.zeros_like(o), "every output element is 0 while the reference is not"),
        (lambda o: np.full_like(o, 0.25), "every output element equals 0.25 while the reference"),
        (lambda o: np.where(np.arange(o.size).reshape(o.shape) == 3, np.nan, o), "1 of 128"),
    ],
)
def test_degenerate_outputs_fail_with_one_sentence(make, sentence):
    q, k, v = _inputs()
    out = make(rounded_reference(q, k, v).rounded["fp32"]).astype(np.float32)
    c = compare(out, q, k, v, bit_match=False)
    assert not c.passed and len(c.reasons) == 1 and c.reasons[0].startswith(sentence)
    with pytest.raises(AssertionError, match=sentence.split(" while")[0]):
        assert_attention_close(out, q, k, v)


def test_default_verdict_passes_correct_outputs_and_judges_the_lse():
    q, k, v = _inputs(n=700)
    ref = rounded_reference(q, k, v)
    for out in (ref.rounded["fp32"], ref.rounded["bf16"]):
        c = compare(out, q, k, v, lse=ref.lse.astype(np.float32), bit_match=False)
        assert c.passed, c.reasons
        assert c.rule is not None and c.rule.schedule == "fa_fp32"
    emu = flash.attention(q, k, v, "fa_fp32", block_n=128)
    assert compare(emu.out, q, k, v, lse=emu.lse, block_n=512, bit_match=False).passed
    # an lse off by 1e-3 nats (a block's worth of mass left out is far more) fails
    bad = compare(ref.rounded["fp32"], q, k, v, lse=ref.lse + 1e-3, bit_match=False)
    assert not bad.passed and bad.reasons[0].startswith("the lse error is")
    # a wrong element beyond 2 x the schedule's worst error fails
    off = ref.rounded["fp32"].copy()
    off[2, 5] += 0.05
    c = compare(off, q, k, v, bit_match=False)
    assert not c.passed and c.rule is not None and c.rule.worst_index == (2, 5)


def test_nearest_variant_is_none_below_the_bit_match_share():
    from amla_numerics.testing.compare import NEAREST_MIN_SHARE

    q, k, v = _inputs(n=640)
    c = compare(rounded_reference(q, k, v).rounded["fp32"], q, k, v, block_n=128)
    assert max(c.bit_match.values()) < NEAREST_MIN_SHARE and c.nearest_variant is None
    amla = flash.attention(q, k, v, "amla", block_n=128).out
    assert compare(amla, q, k, v, block_n=128, variant="amla").nearest_variant == "amla"


def test_bf16_view_on_the_rows_scale():
    """Shares correctly rounded / faithful and the error in BF16 ULPs of the row's largest
    |ref|, against outputs moved by an exact number of BF16 ULPs."""
    q, k, v = _inputs(seed=5, n=300)
    ref = rounded_reference(q, k, v)
    rb = ref.rounded["bf16"]
    m = compare(rb, q, k, v, bit_match=False).metrics
    assert m.bf16_out_cr_frac == 1.0 and m.bf16_out_faithful_frac == 1.0
    assert m.bf16_out_rowmax_ulp_max <= 0.5  # a rounding of the largest value: half a ULP
    bits = rb.view(np.uint16).copy()
    small = np.unravel_index(np.argmin(np.abs(ref.out)), ref.out.shape)  # nearest to zero
    bits[0, 0] += 1  # one BF16 ULP away: still faithful
    bits[small] += 3  # three ULPs of a tiny value: huge at its own scale, tiny on the row's
    moved = bits.view(BF16)
    m2 = compare(moved, q, k, v, bit_match=False).metrics
    n = rb.size
    assert m2.bf16_out_cr_frac == pytest.approx(1 - 2 / n)
    assert m2.bf16_out_faithful_frac == pytest.approx(1 - 1 / n)
    assert m2.bf16_out_max_ulp == 3  # the secondary figure, at the element's own value
    assert m2.bf16_out_rowmax_ulp_max <= 1.5  # one ULP at |ref| <= the row's max, + half
