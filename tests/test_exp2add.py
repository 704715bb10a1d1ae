"""The INT32 exponent add against np.ldexp on its safe domain, and every hazard class
shown with its exact garbage value."""

import numpy as np
import pytest

from amla_numerics.exp2add import (
    HAZARDS,
    exp2_add,
    exp2_add_bits,
    exp2_add_bits_hazards,
    exp2_add_hazards,
)
from amla_numerics.formats import BF16
from tests.oracle import pattern_values
from tests.tolerances import tol


def f32(bits: int) -> np.float32:
    return np.array(bits, dtype=np.uint32).view(np.float32)[()]


@pytest.fixture(scope="module")
def bf16_grid():
    """Every finite BF16-representable FP32 value against n in [-40, 40]."""
    v = pattern_values(BF16)
    x = v[np.isfinite(v)].astype(np.float32)
    n = np.arange(-40, 41)
    return x[:, None], n[None, :]


def test_ok_domain_equals_ldexp_bitwise(bf16_grid):
    x, n = bf16_grid
    got = exp2_add(x, n)
    codes = exp2_add_hazards(x, n).codes
    truth = np.ldexp(x.astype(np.float64), n)  # exact in float64
    ok = codes == 0
    assert ok.sum() > 0.9 * ok.size
    assert np.array_equal(got[ok].astype(np.float64), np.broadcast_to(truth, ok.shape)[ok])


def test_every_wrong_result_is_flagged(bf16_grid):
    x, n = bf16_grid
    got = exp2_add(x, n).astype(np.float64)
    truth = np.broadcast_to(np.ldexp(x.astype(np.float64), n), got.shape)
    codes = exp2_add_hazards(x, n).codes
    wrong = ~((got == truth) & (np.signbit(got) == np.signbit(truth)))
    assert wrong.any()
    assert np.all(codes[wrong] != 0)


def test_hazard_classes_and_their_garbage():
    cases = [
        # (x, n, code name, exact garbage)
        (np.float32(0.0), -30, "zero", -(2.0**99)),  # 0 + (-30 << 23) = 0xF1000000
        (np.float32(0.0), 1, "zero", 2.0**-126),  # 0 + (1 << 23): the smallest normal
        (f32(1), 1, "subnormal", 2.0**-126 * (1 + 2.0**-23)),  # 2**-149 * 2 should be 2**-148
        (f32(0x00C00000), -1, "underflow", 2.0**-127),  # 1.5 * 2**-126 / 2 should be 0.75 * 2**-126
        (np.float32(2.0**-126), -2, "sign_borrow", -np.inf),  # 0x00800000 - 0x01000000
        (np.float32(2.0**127), 1, "overflow", np.inf),
        (np.float32(np.inf), -1, "nonfinite", 2.0**127),
    ]
    for x, n, name, garbage in cases:
        out = exp2_add(x, n)
        assert out.astype(np.float64) == garbage, name
        assert HAZARDS[int(exp2_add_hazards(x, n).codes)] == name


def test_negative_eps_on_zero_is_nan():
    N = -8  # round(-1e-6 * 2**23): a tiny negative compensation on an all-zero column
    assert np.isnan(exp2_add_bits(np.float32(0.0), N))
    assert HAZARDS[int(exp2_add_bits_hazards(np.float32(0.0), N).codes)] == "zero"


def test_max_plus_two_carries_into_the_sign():
    x = np.float32(np.finfo(np.float32).max)
    out = exp2_add(x, 2)
    assert out.view(np.uint32) == 0x807FFFFF
    assert HAZARDS[int(exp2_add_hazards(x, 2).codes)] == "overflow"


def test_negative_values_keep_their_sign():
    x = np.float32([-3.0, -1e-20, -1e30])
    assert np.array_equal(exp2_add(x, -3), x / 8)


def test_fractional_increment_scales_by_one_plus_eps_over_mantissa():
    x = np.float32([1.0, 1.5, 1.75])
    eps = 2.0**-10
    got = exp2_add_bits(x, round(eps * 2**23)).astype(np.float64)
    # x = 1 + f in [1, 2): the add gives 1 + f + eps = x (1 + eps / (1 + f)), exactly
    assert np.array_equal(got, x.astype(np.float64) + eps)
    assert np.allclose(got, x * (1 + eps / x), rtol=tol("exp2add_first_order"))


def test_counts_list_every_class():
    rep = exp2_add_hazards(np.float32([0.0, 1.0, 2.0**-140]), -1)
    assert set(rep.counts) == set(HAZARDS)
    assert rep.counts["zero"] == 1 and rep.counts["subnormal"] == 1 and rep.counts["ok"] == 1
    assert rep.n_hazards == 2


def test_zero_increment_is_always_ok():
    rep = exp2_add_hazards(np.float32([0.0, np.nan, 1e-44]), 0)
    assert rep.n_hazards == 0


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: exp2_add(np.float64(1.0), 1), TypeError, "argument 'x' must be float32"),
        (lambda: exp2_add(np.float32(1.0), 0.5), ValueError, "argument 'n' must hold integers"),
        (lambda: exp2_add(np.float32(1.0), "a"), TypeError, "argument 'n'"),
        (lambda: exp2_add(np.ones(3, np.float32), np.ones(2, int)), ValueError, "do not broadcast"),
        (lambda: exp2_add_bits(np.float32(1.0), np.nan), ValueError, "argument 'N'"),
    ],
)
def test_bad_input(call, exc, message):
    with pytest.raises(exc, match=message):
        call()
