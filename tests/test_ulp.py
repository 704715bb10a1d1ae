"""ulp, ulp_error and ulp_distance against the bit patterns themselves (every code of the
16-bit formats) and numpy's own helpers where numpy has them."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest

from amla_numerics.formats import BF16, E4M3, FP16, FP32, Format
from amla_numerics.ulp import signed_ulp_error, ulp, ulp_distance, ulp_error
from tests.oracle import bits_to_values
from tests.strategies import NARROW_FORMATS

SMALL = NARROW_FORMATS


def positive_finite_patterns(fmt: Format) -> np.ndarray:
    n = 2 ** (8 * fmt.dtype.itemsize - 1)
    bits = np.arange(n, dtype=np.uint64)
    values = bits_to_values(bits, fmt)
    return bits[np.isfinite(values)]


@pytest.mark.parametrize("fmt", SMALL, ids=lambda f: f.name)
def test_ulp_is_the_gap_to_the_next_pattern(fmt):
    bits = positive_finite_patterns(fmt)
    bits = bits[:-1]  # the largest finite value has no finite successor
    x = bits_to_values(bits, fmt)
    gap = bits_to_values(bits + 1, fmt) - x
    assert np.array_equal(ulp(x, fmt), gap)
    assert np.array_equal(ulp(-x, fmt), gap)
    assert np.array_equal(ulp(x.astype(fmt.dtype), fmt), gap)


def test_ulp_special_points():
    assert ulp(0.0, BF16) == BF16.min_subnormal
    assert ulp(1e-45, FP32) == FP32.min_subnormal
    assert np.isinf(ulp(np.inf, FP32)) and np.isnan(ulp(np.nan, FP32))
    with mpmath.workprec(100):  # just below 2: the smaller binade's ulp, taken exactly
        below_two = mpmath.mpf(2) - mpmath.mpf(2) ** -80
    assert ulp(below_two, BF16) == 2.0**-7
    assert ulp(float(below_two), BF16) == 2.0**-6  # float() rounds it up to 2


@pytest.mark.parametrize("fmt", SMALL, ids=lambda f: f.name)
def test_distance_of_every_pattern_to_zero_is_its_index(fmt):
    bits = positive_finite_patterns(fmt)
    x = bits_to_values(bits, fmt)
    assert np.array_equal(ulp_distance(x, 0.0, fmt), bits.astype(np.int64))
    assert np.array_equal(ulp_distance(-x, x, fmt), 2 * bits.astype(np.int64))
    assert np.array_equal(ulp_distance(x.astype(fmt.dtype), -0.0, fmt), bits.astype(np.int64))


@pytest.mark.parametrize("dtype, fmt", [(np.float16, FP16), (np.float32, FP32)])
def test_distance_agrees_with_numpy_integer_repr(dtype, fmt):
    """numpy's sign-magnitude integer views, differenced in int64 (nulp_diff itself casts
    the difference back to the float dtype, which rounds it for float16)."""
    rng = np.random.default_rng(3)
    nbits = 8 * np.dtype(dtype).itemsize
    uint = np.uint16 if nbits == 16 else np.uint32
    a = rng.integers(0, 2**nbits, 20_000, dtype=np.uint64).astype(uint).view(dtype)
    b = rng.integers(0, 2**nbits, 20_000, dtype=np.uint64).astype(uint).view(dtype)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    as_int = np.testing._private.utils.integer_repr
    expected = np.abs(
        as_int(a.copy()).astype(np.int64) - as_int(b.copy()).astype(np.int64)
    )  # it writes in place
    assert np.array_equal(ulp_distance(a, b, fmt), expected)


def test_distance_edges():
    assert ulp_distance(np.float32(0.0), np.float32(-0.0), FP32) == 0
    assert ulp_distance(FP16.max_finite, np.inf, FP16) == 1
    assert ulp_distance(1.0, 1.0 + 2**-7, BF16) == 1
    with pytest.raises(ValueError, match="argument 'a' contains NaN"):
        ulp_distance(np.nan, 1.0, BF16)
    with pytest.raises(ValueError, match="argument 'b' holds values not representable in bf16"):
        ulp_distance(1.0, 1.0 + 2**-9, BF16)
    with pytest.raises(ValueError, match="not representable"):
        ulp_distance(480.0, 0.0, E4M3)
    with pytest.raises(ValueError, match="do not broadcast"):
        ulp_distance(np.ones(3), np.ones(2), BF16)


def test_ulp_error_exact_and_signed():
    assert signed_ulp_error([1.0 + 2**-7], [1.0], BF16)[0] == 1.0
    assert signed_ulp_error([1.0], [1.0 + 2**-8], BF16)[0] == -0.5
    with mpmath.workprec(200):
        ref = mpmath.mpf(1) + mpmath.mpf(2) ** -100
    err = signed_ulp_error(np.array([1.0], np.float32), [ref], FP32)[0]
    assert Fraction(err) == -(Fraction(1, 2**100) / Fraction(1, 2**23)) or err == float(
        -(Fraction(1, 2**77))
    )
    assert ulp_error([2.0], [ref], FP32)[0] == float(Fraction(1 - Fraction(1, 2**100)) * 2**23)
    assert np.isnan(ulp_error([np.nan], [1.0], FP32)[0])


def test_ulp_error_accepts_bfloat16_inputs():
    y = np.array([1.0078125], dtype=BF16.dtype)
    assert ulp_error(y, 1.0, BF16) == 1.0
    assert ulp_error(y, 1.0, FP32) == 2.0**16
