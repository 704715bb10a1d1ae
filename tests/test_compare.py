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
