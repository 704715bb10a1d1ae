"""round_to against an exact Fraction oracle and ml_dtypes: every pattern of the 16-bit
formats against ml_dtypes, a representative sample against the Fraction oracle in the default
run and every pattern under ``-m slow``."""

from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from amla_numerics.formats import BF16, E4M3, E5M2, FP16, FP32, FP64, Format
from amla_numerics.rounding import MODES, round_to
from tests.oracle import oracle_round, pattern_values
from tests.strategies import NARROW_FORMATS

DETERMINISTIC = [m for m in MODES if m != "stochastic"]
NARROW = NARROW_FORMATS


def same(a, b) -> bool:
    """Bitwise-equal values, every NaN equal to every NaN, +0 != -0."""
    with np.errstate(invalid="ignore"):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        nan = np.isnan(a) & np.isnan(b)
        eq = (a == b) & (np.signbit(a) == np.signbit(b))
    return bool(np.all(nan | eq))


def oracle_array(values: np.ndarray, fmt: Format, mode: str, **kw) -> np.ndarray:
    out = np.empty(values.shape)
    for i, v in enumerate(values):
        if np.isnan(v):
            out[i] = np.nan
        elif np.isinf(v):
            out[i] = (
                v
                if fmt.has_inf and not kw.get("saturate")
                else (np.copysign(fmt.max_finite, v) if kw.get("saturate") else np.nan)
            )
        else:
            r = oracle_round(Fraction(float(v)), fmt, mode, **kw)
            out[i] = np.copysign(r, v) if r == 0 else r
    return out


@pytest.fixture(scope="module")
def all_bf16():
    return pattern_values(BF16)


@pytest.fixture(scope="module")
def all_fp16():
    return pattern_values(FP16)


def representative(values: np.ndarray, target: Format, n: int = 4096) -> np.ndarray:
    """A fixed sample of a source format's patterns for the default run: ``n`` drawn at
    random, plus every pattern where rounding to ``target`` is delicate (its subnormal
    range, the binades where it underflows to zero, the top binade and the two above it:
    overflow, saturation), plus zeros and the non-finite ones. The exhaustive tests
    (``slow``) check every pattern."""
    rng = np.random.default_rng(20261207)
    pick = np.zeros(values.size, bool)
    pick[rng.choice(values.size, size=n, replace=False)] = True
    with np.errstate(invalid="ignore"):
        mag = np.abs(values)
        pick |= (mag >= target.min_subnormal / 4) & (mag < 2 * target.min_normal)
        pick |= (mag >= target.max_finite / 2) & (mag <= 4 * target.max_finite)
        pick |= mag == 0
    pick |= ~np.isfinite(values)
    return values[pick]


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("target", [FP16, E4M3, E5M2], ids=lambda f: f.name)
def test_bf16_patterns_against_the_fraction_oracle(all_bf16, target, mode):
    values = representative(all_bf16, target)
    got = round_to(values, target, mode).astype(np.float64)
    assert same(got, oracle_array(values, target, mode))


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("target", [BF16, E4M3, E5M2], ids=lambda f: f.name)
def test_fp16_patterns_against_the_fraction_oracle(all_fp16, target, mode):
    values = representative(all_fp16, target)
    got = round_to(values, target, mode).astype(np.float64)
    assert same(got, oracle_array(values, target, mode))


@pytest.mark.slow
@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("target", [FP16, E4M3, E5M2], ids=lambda f: f.name)
def test_every_bf16_pattern_against_the_fraction_oracle(all_bf16, target, mode):
    got = round_to(all_bf16, target, mode).astype(np.float64)
    assert same(got, oracle_array(all_bf16, target, mode))


@pytest.mark.slow
@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("target", [BF16, E4M3, E5M2], ids=lambda f: f.name)
def test_every_fp16_pattern_against_the_fraction_oracle(all_fp16, target, mode):
    got = round_to(all_fp16, target, mode).astype(np.float64)
    assert same(got, oracle_array(all_fp16, target, mode))


@pytest.mark.parametrize("source", [BF16, FP16], ids=lambda f: f.name)
@pytest.mark.parametrize("target", NARROW, ids=lambda f: f.name)
def test_every_pattern_rne_agrees_with_ml_dtypes(source, target):
    values = pattern_values(source)
    src = values.astype(source.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = src.astype(np.float32).astype(target.dtype).astype(np.float64)
    assert same(round_to(src, target).astype(np.float64), expected)
    # the same values given as float64 take the generic path: it must agree too
    assert same(round_to(values, target).astype(np.float64), expected)


@pytest.mark.parametrize("fmt", NARROW, ids=lambda f: f.name)
def test_round_trip_every_pattern_is_the_identity(fmt):
    values = pattern_values(fmt)
    stored = values.astype(fmt.dtype)
    for mode in DETERMINISTIC:
        assert same(round_to(stored, fmt, mode).astype(np.float64), values)
        assert same(round_to(values, fmt, mode).astype(np.float64), values)


def strided_fp32(step: int, offset: int = 0) -> np.ndarray:
    bits = np.arange(offset, 2**32, step, dtype=np.uint64).astype(np.uint32)
    return bits.view(np.float32)


@pytest.mark.parametrize("target", [BF16, FP16], ids=lambda f: f.name)
def test_strided_fp32_rne_against_ml_dtypes_and_the_oracle(target):
    x = strided_fp32(4099, 17)  # ~1M patterns, every exponent, odd stride hits all low bits
    got = round_to(x, target)
    with np.errstate(over="ignore", invalid="ignore"):
        assert same(got.astype(np.float64), x.astype(target.dtype).astype(np.float64))
    sample = x.astype(np.float64)[::97]  # the exact oracle on a 10k sub-sample
    assert same(got.astype(np.float64)[::97], oracle_array(sample, target, "rne"))


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_strided_fp32_to_bf16_bit_path_matches_generic_path(mode):
    """The hand-written FP32->BF16 bit path (all modes) against the float64 generic path."""
    x = strided_fp32(65537 * 3 + 2, 5)
    fast = round_to(x, BF16, mode)
    generic = round_to(x.astype(np.float64), BF16, mode)
    assert same(fast.astype(np.float64), generic.astype(np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("target", [BF16, FP16], ids=lambda f: f.name)
def test_all_fp32_patterns_rne(target):
    for chunk in range(64):
        bits = np.arange(chunk << 26, (chunk + 1) << 26, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = x.astype(np.float64).astype(target.dtype)
        if target is BF16:  # float64 -> bf16 in ml_dtypes rounds twice: use the generic path
            expected = round_to(x.astype(np.float64), target)
        assert same(round_to(x, target).astype(np.float64), expected.astype(np.float64))


# ----------------------------------------------------------------- exact (mpf) inputs


def tie_cases(fmt: Format):
    """(Fraction) values at, just above and just below ties, in normal and subnormal range."""
    out = []
    for base in (
        Fraction(1),
        Fraction(3, 2),
        fmt.max_finite_exact / 2,
        Fraction(fmt.min_normal) * 3,
    ):
        q = Fraction(2) ** (int(np.floor(np.log2(float(base)))) - fmt.p + 1)
        for k in (0, 1):
            tie = base + k * q + q / 2
            for delta in (0, Fraction(1, 2**70), -Fraction(1, 2**70)):
                out.append(tie + delta)
    sub = Fraction(fmt.min_subnormal)
    out += [sub / 2, sub / 2 + Fraction(1, 2**200), sub * 3 / 2, sub / 4]
    big = fmt.max_finite_exact + Fraction(2) ** (fmt.emax - fmt.p)  # max + half a quantum
    out += [big, big - Fraction(1, 2**60), big * 2]
    return out + [-v for v in out]


@pytest.mark.parametrize("fmt", [FP64, FP32, BF16, FP16, E4M3, E5M2], ids=lambda f: f.name)
@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_mpf_inputs_round_once(fmt, mode):
    cases = tie_cases(fmt)
    with mpmath.workprec(2000):
        mpfs = [mpmath.mpf(c.numerator) / c.denominator for c in cases]
    got = round_to(mpfs, fmt, mode).astype(np.float64)
    expected = np.array([oracle_round(c, fmt, mode) for c in cases])
    assert same(got, expected)
    # Fractions take the same exact path
    assert same(round_to(np.array(cases, dtype=object), fmt, mode).astype(np.float64), got)


def test_mpf_is_not_rounded_through_float64():
    with mpmath.workprec(200):
        x = mpmath.mpf(1) + mpmath.mpf(2) ** -8 + mpmath.mpf(2) ** -70
    assert float(round_to(x, BF16)) == 1 + 2**-7
    assert float(round_to(float(x), BF16)) == 1.0  # what double rounding would give


@given(st.fractions(min_value=-(10**6), max_value=10**6, max_denominator=2**80))
@example(Fraction(1) + Fraction(1, 2**8) + Fraction(1, 2**70))
def test_fractions_against_the_oracle(q):
    for fmt in (FP32, BF16, FP16):
        for mode in DETERMINISTIC:
            got = float(round_to(q, fmt, mode))
            assert same(abs(got), abs(oracle_round(q, fmt, mode)))


# ------------------------------------------------------------------ options


def test_ftz_flushes_subnormal_results_keeping_the_sign():
    x = np.array([1e-40, -1e-40, 2e-38, 1.0], np.float32)
    got = round_to(x, BF16, ftz=True).astype(np.float64)
    assert same(got, [0.0, -0.0, float(round_to(np.float32(2e-38), BF16)), 1.0])


def test_overflow_inf_or_saturate():
    x = np.array([1e6, -1e6, np.inf], np.float64)
    assert same(round_to(x, FP16).astype(float), [np.inf, -np.inf, np.inf])
    assert same(round_to(x, FP16, saturate=True).astype(float), [65504.0, -65504.0, 65504.0])
    assert same(round_to(x, E4M3).astype(float), [np.nan, np.nan, np.nan])
    assert same(round_to(x, FP16, "rz").astype(float), [65504.0, -65504.0, np.inf])
    assert same(round_to(x, FP16, "ru").astype(float), [np.inf, -65504.0, np.inf])


def test_stochastic_rounding_is_unbiased_and_reproducible():
    x = np.full(200_000, 1 + 2**-9, np.float64)  # a quarter of the way from 1 to 1 + 2**-7
    a = round_to(x, BF16, "stochastic", rng=np.random.default_rng(1)).astype(float)
    b = round_to(x, BF16, "stochastic", rng=np.random.default_rng(1)).astype(float)
    assert np.array_equal(a, b)
    assert set(np.unique(a)) == {1.0, 1 + 2**-7}
    frac_up = np.mean(a > 1)
    assert abs(frac_up - 0.25) < 5 * np.sqrt(0.25 * 0.75 / x.size)  # 5 sigma
    exact = np.full(10, 1 + 2**-7)
    assert np.all(
        round_to(exact, BF16, "stochastic", rng=np.random.default_rng(0)).astype(float) == exact
    )


def test_stochastic_with_few_random_bits_never_rounds_tiny_remainders_up():
    x = np.full(10_000, 1 + 2**-7 * 2**-12, np.float64)  # remainder 2**-12 of a quantum
    got = round_to(x, BF16, "stochastic", rng=np.random.default_rng(0), random_bits=8)
    assert np.all(got.astype(float) == 1.0)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: round_to([1.0], "fp12"), ValueError, "argument 'fmt'"),
        (lambda: round_to([1.0], BF16, "nearest"), ValueError, "argument 'mode'"),
        (lambda: round_to([1.0], BF16, "stochastic"), ValueError, "argument 'rng'"),
        (
            lambda: round_to([1.0], BF16, "stochastic", rng=np.random.default_rng(), random_bits=0),
            ValueError,
            "argument 'random_bits'",
        ),
        (lambda: round_to(["a"], BF16), TypeError, "argument 'x'"),
        (lambda: round_to([1 + 2j], BF16), TypeError, "argument 'x'"),
    ],
)
def test_bad_input(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_bfloat16_and_fp8_inputs_are_taken_exactly():
    x = np.array([1.0078125, 448.0], dtype=ml_dtypes.bfloat16)
    assert same(round_to(x, FP32).astype(float), [1.0078125, 448.0])
    y = np.array([448.0], dtype=ml_dtypes.float8_e4m3fn)
    assert same(round_to(y, BF16).astype(float), [448.0])
