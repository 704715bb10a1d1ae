"""Shared hypothesis strategies: values and attention inputs in every format.

Every strategy draws *bit patterns* of the target format (so subnormals, signed zeros and
the extremes come up as often as they matter) and returns arrays in the format's dtype.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from amla_numerics.formats import BF16, E4M3, E5M2, FP16, FP32, Format

__all__ = [
    "FORMATS_UNDER_TEST",
    "NARROW_FORMATS",
    "attention_inputs",
    "examples",
    "finite_values",
    "format_arrays",
]

#: One list of formats drives every parametrised test (subsets below are derived from it).
FORMATS_UNDER_TEST: tuple[Format, ...] = (FP32, BF16, FP16, E4M3, E5M2)
#: The formats of at most 16 bits: small enough to enumerate every bit pattern.
NARROW_FORMATS: tuple[Format, ...] = tuple(f for f in FORMATS_UNDER_TEST if f.dtype.itemsize <= 2)

_PROFILE_SCALE = {"quick": 1, "thorough": 20}


def examples(n: int) -> int:
    """A property test's example budget under the active hypothesis profile (tests/conftest.py)."""
    return n * _PROFILE_SCALE.get(os.environ.get("AMLA_HYPOTHESIS_PROFILE", "quick"), 1)


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _from_bits(bits: np.ndarray, fmt: Format) -> np.ndarray:
    return bits.astype(_UINT[fmt.dtype.itemsize]).view(fmt.dtype)


@st.composite
def format_arrays(
    draw,
    fmt: Format,
    shape,
    *,
    finite: bool = True,
    max_abs: float | None = None,
):
    """Arrays of ``fmt``'s dtype drawn from its bit patterns (finite by default).

    ``max_abs`` bounds the magnitude (patterns beyond it are folded back by halving the
    exponent range), which keeps attention scores in a sane range.
    """
    nbits = 8 * fmt.dtype.itemsize
    bits = draw(hnp.arrays(_UINT[fmt.dtype.itemsize], shape, elements=st.integers(0, 2**nbits - 1)))
    x = _from_bits(bits, fmt).astype(np.float64)
    if finite:
        x = np.where(np.isfinite(x), x, 0.0)
    if max_abs is not None:
        big = np.abs(x) > max_abs
        x = np.where(big, np.sign(x) * np.ldexp(np.abs(np.frexp(x)[0]), int(np.log2(max_abs))), x)
    return x.astype(fmt.dtype)


def finite_values(fmt: Format, *, min_abs: float = 0.0, max_abs: float | None = None):
    """Scalars (float64) exactly representable in ``fmt``, finite."""
    nbits = 8 * fmt.dtype.itemsize
    top = max_abs if max_abs is not None else fmt.max_finite

    def ok(v: float) -> bool:
        return np.isfinite(v) and min_abs <= abs(v) <= top

    return (
        st.integers(0, 2**nbits - 1).map(lambda b: float(_from_bits(np.array(b), fmt))).filter(ok)
    )


@st.composite
def attention_inputs(
    draw,
    fmt: Format = BF16,
    *,
    max_m: int = 4,
    max_n: int = 40,
    max_dk: int = 16,
    max_dv: int = 8,
    scale_range: tuple[float, float] = (0.05, 4.0),
):
    """``(q, k, v, scale)`` with q (M, Dk), k (N, Dk), v (N, Dv) in ``fmt`` (Gaussian-like).

    Values are ``fmt``-rounded normals times a per-draw magnitude, so scores stay finite
    while spanning from near-uniform to very peaky softmaxes.
    """
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, max_n))
    dk = draw(st.integers(1, max_dk))
    dv = draw(st.integers(1, max_dv))
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(st.sampled_from([0.1, 1.0, 3.0, 10.0]))
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((m, dk)) * mag).astype(fmt.dtype)
    k = (rng.standard_normal((n, dk)) * mag).astype(fmt.dtype)
    v = rng.standard_normal((n, dv)).astype(fmt.dtype)
    scale = draw(st.floats(*scale_range))
    return q, k, v, scale


# --------------------------------------------------------------------------- reference

#: The adversarial attention cases of the reference tests, by name.
ADVERSARIAL_KINDS: tuple[str, ...] = (
    "spread",  # scores over +-1e3: exp underflows for all but a few keys
    "cancel",  # outputs that nearly cancel (relative accuracy near zero)
    "ties",  # exact ties at the row max
    "zero_column",  # an all-zero V column
    "tiny",  # N = 1, Dk = 1, M = 1
)


@st.composite
def adversarial_attention_inputs(draw, fmt: Format = BF16, kind: str | None = None):
    """``(q, k, v, scale, kind)`` in ``fmt`` for one of :data:`ADVERSARIAL_KINDS`."""
    kind = kind or draw(st.sampled_from(ADVERSARIAL_KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = draw(st.integers(1, 3))
    n = draw(st.integers(2, 24))
    dv = draw(st.integers(1, 5))
    if kind == "spread":
        q = np.ones((m, 1))
        k = rng.uniform(-1000, 1000, (n, 1))
        k[rng.integers(n)] = 990.0  # a few keys near the top
        v = rng.standard_normal((n, dv))
        scale = 1.0
    elif kind == "cancel":
        dk = draw(st.integers(1, 6))
        q = rng.standard_normal((m, dk))
        base = rng.standard_normal((1, dk))
        k = np.repeat(base, n, axis=0)
        k[1::2] += rng.standard_normal((len(k[1::2]), dk)) * 2.0**-6  # near-equal scores
        a = rng.standard_normal((1, dv))
        v = np.where(np.arange(n)[:, None] % 2 == 0, a, -a)  # +a / -a pairs
        scale = draw(st.sampled_from([1.0, 0.125]))
    elif kind == "ties":
        dk = draw(st.integers(1, 6))
        q = rng.standard_normal((m, dk))
        k = rng.standard_normal((n, dk))
        k[: max(2, n // 3)] = k[0]  # identical keys: exact ties at the max for some rows
        q[0] = k[0] * 4
        v = rng.standard_normal((n, dv))
        scale = 1.0
    elif kind == "zero_column":
        dk = draw(st.integers(1, 6))
        q = rng.standard_normal((m, dk))
        k = rng.standard_normal((n, dk))
        v = rng.standard_normal((n, dv))
        v[:, rng.integers(dv)] = 0.0
        scale = 0.5
    else:  # tiny
        q = rng.standard_normal((1, 1)) * 3
        k = rng.standard_normal((1, 1)) * 3
        v = rng.standard_normal((1, 1))
        scale = None
    cast = lambda x: np.asarray(x, np.float64).astype(np.float32).astype(fmt.dtype)  # noqa: E731
    return cast(q), cast(k), cast(v), scale, kind
