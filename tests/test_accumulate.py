"""Matrix-unit accumulation models and row sums against exact Fraction oracles on small tiles."""

from __future__ import annotations

import math
import os
import warnings
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amla_numerics.flash.accumulate import (
    ACCUMULATION_PRESETS,
    EMIN,
    Accumulation,
    add_rounded,
    matmul,
    saturated,
    vector_sum,
)
from amla_numerics.formats import FP32
from tests.oracle import oracle_round
from tests.strategies import examples

F = Fraction


def _r32(x: Fraction, mode: str = "rne") -> Fraction:
    return F(oracle_round(x, FP32, mode))


def _floor_log2(x: Fraction) -> int:
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while F(2) ** e > x:
        e -= 1
    while F(2) ** (e + 1) <= x:
        e += 1
    return e


def oracle_exact(a, b, mode="rne"):
    return [
        [_r32(sum(F(x) * F(y) for x, y in zip(row, col, strict=True)), mode) for col in b.T]
        for row in a
    ]


def oracle_seq(a, b, mode="rne"):
    out = []
    for row in a:
        line = []
        for col in b.T:
            s = F(0)
            for x, y in zip(row, col, strict=True):
                s = _r32(s + F(x) * F(y), mode)
            line.append(s)
        out.append(line)
    return out


def _tree(terms, mode):
    if len(terms) == 1:
        return _r32(terms[0], mode)
    while len(terms) > 1:
        nxt = [_r32(terms[i] + terms[i + 1], mode) for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def oracle_pairwise(a, b, mode="rne"):
    return [
        [_tree([F(x) * F(y) for x, y in zip(row, col, strict=True)], mode) for col in b.T]
        for row in a
    ]


def _cut(x: Fraction, quantum: Fraction, how: str) -> Fraction:
    q = x / quantum
    n = (
        q.numerator // q.denominator if q >= 0 else -((-q.numerator) // q.denominator)
    )  # toward zero
    if how == "rne":
        n = round(q)  # Python rounds Fractions half to even
    return n * quantum


def _raw_exp(x: Fraction, emin: int) -> int:
    """The block FMA's exponent of an operand: floor(log2 |x|), at least its format's emin."""
    return max(_floor_log2(abs(x)), emin)


def _round_bits(x: Fraction, bits: int, mode: str) -> Fraction:
    """``x`` to ``bits`` significant bits with FP32's exponent range (quantum floor
    ``2**(-126 - bits + 1)``), by the definition: a multiple of the quantum, cut by mode."""
    if x == 0:
        return x
    e = max(_floor_log2(abs(x)), -126)
    return _cut(x, F(2) ** (e - bits + 1), mode)


def oracle_block_fma(a, b, acc: Accumulation, emin=(-126, -126)):
    """Khattak & Mikaitis's block FMA, term by term in Fractions (module docstring)."""
    bits = 24 if acc.acc_bits is None else acc.acc_bits
    frac = bits - 1 + acc.extra_bits
    out = []
    for row in a:
        line = []
        for col in b.T:
            pairs = [(F(x), F(y)) for x, y in zip(row, col, strict=True)]
            c = F(0)
            for k0 in range(0, len(pairs), acc.block):
                block = [(x, y) for x, y in pairs[k0 : k0 + acc.block] if x != 0 and y != 0]
                exps = [_raw_exp(x, emin[0]) + _raw_exp(y, emin[1]) for x, y in block]
                if c != 0:
                    exps.append(_raw_exp(c, -126))
                if not exps:
                    c = F(0)
                    continue
                quantum = F(2) ** (max(exps) - frac)
                terms = [c, *(x * y for x, y in block)]
                total = sum(_cut(t, quantum, acc.align_rounding) for t in terms)
                if acc.acc_bits is None:
                    c = _r32(total, acc.out_rounding)
                else:
                    c = _round_bits(total, bits, acc.out_rounding)
            line.append(c)
        out.append(line)
    return out


def _tile(seed: int, m: int, k: int, n: int, spread: float):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)) * np.exp2(rng.integers(-int(spread), int(spread) + 1, (m, k)))
    b = rng.standard_normal((k, n)) * np.exp2(rng.integers(-int(spread), int(spread) + 1, (k, n)))
    bf = ml_dtypes.bfloat16
    return a.astype(bf).astype(np.float64), b.astype(bf).astype(np.float64)


def _as_fraction_grid(x):
    return [[F(float(v)) for v in row] for row in x]


MODELS = [
    ("exact", Accumulation("exact"), oracle_exact),
    ("exact_rz", Accumulation("exact", out_rounding="rz"), lambda a, b: oracle_exact(a, b, "rz")),
    ("fp32_seq", Accumulation("fp32_seq"), oracle_seq),
    ("pairwise", Accumulation("pairwise"), oracle_pairwise),
    *[
        (f"block_fma_{name}", acc, lambda a, b, acc=acc: oracle_block_fma(a, b, acc))
        for name, acc in ACCUMULATION_PRESETS.items()
    ],
    (
        "block_fma_acc10_rne",
        Accumulation("block_fma", block=5, extra_bits=1, out_rounding="rne", acc_bits=10),
        lambda a, b: oracle_block_fma(
            a, b, Accumulation("block_fma", block=5, extra_bits=1, out_rounding="rne", acc_bits=10)
        ),
    ),
    (
        "block_fma_rne3",
        Accumulation("block_fma", block=3, extra_bits=2, align_rounding="rne", out_rounding="rne"),
        lambda a, b: oracle_block_fma(
            a,
            b,
            Accumulation(
                "block_fma", block=3, extra_bits=2, align_rounding="rne", out_rounding="rne"
            ),
        ),
    ),
]


@pytest.mark.parametrize(("name", "acc", "oracle"), MODELS, ids=[m[0] for m in MODELS])
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 3),
    k=st.integers(1, 13),
    n=st.integers(1, 3),
    spread=st.sampled_from([0, 4, 12, 30]),
)
@settings(max_examples=examples(25))
def test_model_matches_fraction_oracle(name, acc, oracle, seed, m, k, n, spread):
    a, b = _tile(seed, m, k, n, spread)
    got = matmul(a, b, acc, "fp32")
    assert got.dtype == np.float32
    assert _as_fraction_grid(got) == oracle(a, b)


@pytest.mark.parametrize("p", [None, 8])
@given(seed=st.integers(0, 2**32 - 1), tail=st.sampled_from([0.0, 1e-7, 1e-20]))
@settings(max_examples=examples(30))
@example(seed=0, tail=1e-20)
def test_exact_model_with_ties_and_tails(p, seed, tail):
    """Sums that land on FP32 ties, decided (or not) by a tiny tail: the hard path."""
    rng = np.random.default_rng(seed)
    k = 24
    a = np.ones((4, k))
    b = np.zeros((k, 5))
    b[0] = 1.0
    b[1] = 2.0**-24 * rng.choice([1, 3, 5], 5)  # 1 + odd * 2**-24: a tie for FP32
    a[:, 2] = np.float64(ml_dtypes.bfloat16(tail)) * rng.choice([-1.0, 0.0, 1.0], 4)
    b[2] = 1.0
    b[3:] = rng.standard_normal((k - 3, 5)).astype(ml_dtypes.bfloat16).astype(float) * 2.0**-40
    a[:, 3:] = 0.0
    got = matmul(a, b, Accumulation("exact"), "fp32", in_precision=p)
    assert _as_fraction_grid(got) == oracle_exact(a, b)


def test_exact_model_bf16_softmax_tile_with_tiny_tail_is_exact():
    rng = np.random.default_rng(5)
    p_tile = np.exp(rng.standard_normal((6, 200)) * 4 - 6).astype(ml_dtypes.bfloat16).astype(float)
    v = rng.standard_normal((200, 3)).astype(ml_dtypes.bfloat16).astype(float)
    for prec in (None, 8):
        got = matmul(p_tile, v, Accumulation("exact"), "fp32", in_precision=prec)
        assert _as_fraction_grid(got) == oracle_exact(p_tile, v)


@given(x=st.floats(-1e30, 1e30), y=st.floats(-1e30, 1e30), mode=st.sampled_from(["rne", "rz"]))
@example(x=1.0, y=2.0**-24, mode="rne").via("tie to even")
@example(x=1.0, y=2.0**-24 + 2.0**-70, mode="rne").via("tie broken by a tail below float64")
def test_add_rounded_is_one_rounding(x, y, mode):
    assert F(float(add_rounded(np.float64(x), np.float64(y), "fp32", mode))) == _r32(
        F(x) + F(y), mode
    )


@pytest.mark.parametrize("order", ["seq", "pairwise", "exact"])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 17))
@settings(max_examples=examples(30))
def test_vector_sum_orders(order, seed, n):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, n)) * np.exp2(rng.integers(-20, 20, (2, n)))).astype(np.float32)
    got = vector_sum(x, order)
    for row, g in zip(x, got, strict=True):
        terms = [F(float(t)) for t in row]
        if order == "seq":
            s = terms[0]
            for t in terms[1:]:
                s = _r32(s + t)
            want = s
        elif order == "pairwise":
            want = _tree(terms, "rne") if len(terms) > 1 else terms[0]
        else:
            want = _r32(sum(terms))
        assert F(float(g)) == want


def test_bad_accumulation_arguments():
    with pytest.raises(ValueError, match="accumulation model"):
        Accumulation("kahan")
    with pytest.raises(ValueError, match="block"):
        Accumulation("block_fma", block=0)
    with pytest.raises(ValueError, match="inner dimensions"):
        matmul(np.ones((2, 3)), np.ones((4, 2)), Accumulation("pairwise"))
    with pytest.raises(ValueError, match="'out'"):
        matmul(np.ones((2, 3)), np.ones((3, 2)), Accumulation("exact"), "fp16")


@pytest.mark.parametrize("model", ["pairwise", "block_fma"])
def test_row_chunking_does_not_change_results(model, monkeypatch):
    from amla_numerics.flash import accumulate

    a, b = _tile(9, 7, 11, 4, 8)
    acc = Accumulation(model)
    whole = matmul(a, b, acc, "fp32")
    monkeypatch.setattr(accumulate, "_CHUNK", 1)  # one row at a time
    assert np.array_equal(matmul(a, b, acc, "fp32"), whole)


@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 4),
    k=st.integers(1, 40),
    n=st.integers(1, 4),
    spread=st.sampled_from([0, 8, 30, 60]),
    batch=st.booleans(),
    mode=st.sampled_from(["rne", "rz"]),
)
@settings(max_examples=examples(60))
def test_exact_model_fast_path_matches_oracle(seed, m, k, n, spread, batch, mode):
    """The BF16 fast path (row exactness test, hi/lo split, bounds, fsum) on wide-range tiles."""
    a, b = _tile(seed, m, k, n, spread)
    acc = Accumulation("exact", out_rounding=mode)
    if batch:  # a leading dimension takes the general (non 2-D) route
        got = matmul(np.stack([a, a[::-1]]), b, acc, "fp32", in_precision=8)
        assert _as_fraction_grid(got[0]) == oracle_exact(a, b, mode)
        assert _as_fraction_grid(got[1]) == oracle_exact(a[::-1], b, mode)
    else:
        got = matmul(a, b, acc, "fp32", in_precision=8)
        assert _as_fraction_grid(got) == oracle_exact(a, b, mode)


@pytest.mark.parametrize("gather, few", [(1 << 21, 256), (0, 256), (1 << 21, 0)])
def test_exact_model_certificates_every_path_matches_the_oracle(monkeypatch, gather, few):
    """The BLAS product plus rounding certificates (row bound, pair and per-element exactness,
    fsum, the split fallbacks), with and without the caller's statistics, is the exact sum
    rounded once: BF16 softmax-like tiles with ties, tiny tails and zero columns."""
    import amla_numerics.flash._exactsum as acc_mod

    monkeypatch.setattr(acc_mod, "_GATHER", gather)
    monkeypatch.setattr(acc_mod, "_FEW", few)
    rng = np.random.default_rng(11)
    bf = lambda x: x.astype(ml_dtypes.bfloat16).astype(float)  # noqa: E731
    p_tile = bf(np.exp(rng.standard_normal((7, 96)) * 3 - 4))
    p_tile[0, :90] = 0.0  # a sparse row: few-bit sums, exact ties
    p_tile[1] = bf(np.full(96, 0.5) + rng.integers(0, 2, 96) * 2.0**-8)
    v = bf(rng.standard_normal((96, 9)))
    v[:, 2] = 0.0
    v[5, 4] = bf(np.float64(1e-30))
    q = bf(rng.standard_normal((5, 96)))
    q[2, 3] = bf(np.float64(1e-25))
    for a, b in ((p_tile, v), (q, v)):
        nb = np.sqrt(np.einsum("kn,kn->n", b, b))
        small = acc_mod.min_nonzero_abs(b, -2)
        stats = (nb, acc_mod.quantum_exp_from_min(small, 8))
        a_stats = (np.sqrt(np.einsum("mk,mk->m", a, a)), acc_mod._min_quantum_exp_fast(a, 8))
        want = oracle_exact(a, b)
        for kw in (
            {},
            {"b_stats": stats},
            {"b_stats": stats, "a_stats": a_stats},
            {"b_absmax": float(np.abs(b).max())},
        ):
            got = matmul(a, b, Accumulation("exact"), "fp32", in_precision=8, **kw)
            assert _as_fraction_grid(got) == want, kw
        got = matmul(
            a, b, Accumulation("exact", out_rounding="rz"), "fp32", in_precision=8, b_stats=stats
        )
        assert _as_fraction_grid(got) == oracle_exact(a, b, "rz")


def _fp8_tile(seed: int, m: int, k: int, n: int, fmt: str, spread: int):
    """E4M3/E5M2 operands (subnormals included when ``spread`` is large), as float64."""
    rng = np.random.default_rng(seed)
    dt = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[fmt]

    def draw(shape):
        x = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, 1, shape))
        x[rng.random(shape) < 0.1] = 0.0
        return x.astype(dt).astype(np.float64)

    return draw((m, k)), draw((k, n))


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 100),
    spread=st.sampled_from([0, 6, 12]),
    acc_name=st.sampled_from(["h100_fp8", "h100"]),
)
@settings(max_examples=examples(25))
def test_block_fma_fp8_operands_match_fraction_oracle(fmt, seed, k, spread, acc_name):
    """FP8 operands (subnormal ones take the format's emin as raw exponent), several chained
    32-product blocks: the reduced-width accumulator and its carry of c between blocks."""
    a, b = _fp8_tile(seed, 2, k, 3, fmt, spread)
    acc = ACCUMULATION_PRESETS[acc_name]
    emin = (EMIN[fmt], EMIN[fmt])
    got = matmul(a, b, acc, "fp32", in_emin=emin)
    assert _as_fraction_grid(got) == oracle_block_fma(a, b, acc, emin)


def test_block_fma_raw_exponent_is_not_renormalised():
    """1.5 * 1.5 and 2.25 * 1 have the same value but raw exponents 0 and 1: beside
    -1.125 * 1.75 and 2**-23 the first aligns on 2**-23 and keeps the tail, the second
    aligns on 2**-22 and cuts it (the cancelled sum shows the difference)."""
    acc = Accumulation("block_fma", block=3, out_rounding="rz")
    col = np.array([[1.75], [1.0], [1.0]])
    kept = matmul(np.array([[-1.125, 2.0**-23, 1.5]]), col * [[1], [1], [1.5]], acc)
    cut = matmul(np.array([[-1.125, 2.0**-23, 2.25]]), col, acc)
    assert float(kept[0, 0]) == 0.28125 + 2.0**-23
    assert float(cut[0, 0]) == 0.28125


def test_h100_fp8_accumulator_keeps_14_bits():
    """Hand-checked: 1 + 2**-13 survives the 13-fraction-bit grid, 1 + 2**-14 is cut; each
    block's result carries at most 14 significant bits into the next block."""
    acc = ACCUMULATION_PRESETS["h100_fp8"]
    ones = np.ones((2, 1))
    assert float(matmul(np.array([[1.0, 2.0**-13]]), ones, acc)[0, 0]) == 1.0 + 2.0**-13
    assert float(matmul(np.array([[1.0, 2.0**-14]]), ones, acc)[0, 0]) == 1.0
    # 64 products of 1 + 2**-3 (E4M3: 1.125): block sums 36, then 72, exact in 14 bits
    a, b = np.full((1, 64), 1.125), np.ones((64, 1))
    assert float(matmul(a, b, acc)[0, 0]) == 72.0
    # a 3-bit tail on a large c is lost at every block boundary
    a = np.array([[1024.0] + [2.0**-4] * 63])
    got = float(matmul(a, np.ones((64, 1)), acc)[0, 0])
    # block 1: eta = 10, grid 2**-3: each 2**-4 cut to 0 -> 1024; block 2 likewise
    assert got == 1024.0


@pytest.mark.parametrize(
    ("acc", "expect"),
    [
        (ACCUMULATION_PRESETS["h100"], float(np.finfo(np.float32).max)),  # RZ, 24 bits
        (ACCUMULATION_PRESETS["h100_fp8"], (2 - 2.0**-13) * 2.0**127),  # RZ, 14 bits
        (Accumulation("block_fma", block=4, acc_bits=14, out_rounding="rne"), math.inf),
        (Accumulation("block_fma", block=4, out_rounding="rne"), math.inf),
    ],
)
def test_an_accumulator_beyond_fp32_overflows_as_ieee(acc, expect):
    """A block sum beyond FP32 overflows as IEEE does for the accumulator's rounding: +inf
    under RNE, the largest value of its bit width under RZ; the finite products of the
    later blocks leave it there (RZ cuts them, inf absorbs them), with no floating-point
    warning (the emulator counts an overflowed output per element)."""
    n = acc.block
    a = np.array([[3e38] * n + [1.0] * n])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = matmul(a, np.ones((2 * n, 1)), acc)
    assert got.dtype == np.float32 and float(got[0, 0]) == expect


def test_bad_acc_bits():
    for bad in (1, 54, 3.5, True):
        with pytest.raises(ValueError, match="'acc_bits'"):
            Accumulation("block_fma", acc_bits=bad)
    with pytest.raises(ValueError, match="'acc_bits'"):
        matmul(np.ones((1, 2)), np.ones((2, 1)), Accumulation("block_fma", acc_bits=30), "fp32")


# --- the authors' published hardware vectors (Khattak & Mikaitis, MATLAB-tensor-core,
# model_validation/<GPU>/<fmt>/{a,b,c,d}_*.txt: a, b as FP32 hex words, c, d as 32-bit
# strings). Not shipped (their data); set AMLA_TC_VECTORS to a copy of model_validation/.
_VECTORS = os.environ.get("AMLA_TC_VECTORS")
_CASES = [  # gpu, fmt, preset, emin, c used (the FP8 runs fed c = 0: see the preset notes)
    ("V100", "fp16", "v100", -14, True),
    ("A100", "bf16", "a100", -126, True),
    ("H100", "bf16", "h100", -126, True),
    ("H100", "fp16", "h100", -14, True),
    ("H100", "E4M3", "h100_fp8", -6, False),
    ("H100", "E5M2", "h100_fp8", -14, False),
]


def _words(path: Path, base: int) -> np.ndarray:
    rows = [[int(w, base) for w in line.split()] for line in path.read_text().splitlines()]
    return np.array([r for r in rows if r], np.uint32).view(np.float32).astype(np.float64)


@pytest.mark.skipif(_VECTORS is None, reason="AMLA_TC_VECTORS (published vectors) not set")
@pytest.mark.parametrize(("gpu", "fmt", "preset", "emin", "use_c"), _CASES)
def test_presets_reproduce_published_hardware_vectors(gpu, fmt, preset, emin, use_c):
    """Every published row, bit for bit: c goes in as a first block of its own (``c * 1``
    alone in a block is c itself, exactly), then the row's products in one block."""
    d = Path(str(_VECTORS)) / gpu / fmt
    a = _words(d / f"a_{gpu}_{fmt}.txt", 16)
    b = _words(d / f"b_{gpu}_{fmt}.txt", 16)
    c = _words(d / f"c_{gpu}_fp32.txt", 2)[:, 0]
    want = _words(d / f"d_{gpu}_fp32.txt", 2)[:, 0].astype(np.float32)
    acc = ACCUMULATION_PRESETS[preset]
    assert a.shape[1] == acc.block
    lead = np.where(use_c, c, 0.0)
    # [c, 0, ..., 0 | a_row] . [1, 0, ..., 0 | b_row]: block 1 is c alone (exact, and c has
    # at most acc_bits bits here), block 2 the row with c as accumulator
    pad = np.zeros((a.shape[0], acc.block - 1))
    aa = np.concatenate([lead[:, None], pad, a], axis=1)
    bb = np.concatenate([np.ones((a.shape[0], 1)), pad, b], axis=1)
    got = matmul(aa[:, None, :], bb[:, :, None], acc, in_emin=(emin, emin))[:, 0, 0]
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, f"{bad.size} of {len(want)} rows differ, first {bad[:5]}"


def test_fp8_preset_in_a_policy_round_trips():
    """The FP8 accumulator as the policy's P V model survives JSON (acc_bits included) and
    the emulator runs it: fa_fp8 under it differs from the exact-FP32 run (the 14-bit
    accumulator is in effect) by less than the block FMA's bound constant allows."""
    from amla_numerics import flash
    from amla_numerics.flash.policy import MatmulPolicy, Policy, get_policy

    acc = ACCUMULATION_PRESETS["h100_fp8"]
    pol = get_policy("ascend").replace(pv=MatmulPolicy("bf16", acc, "fp32"))
    assert Policy.from_json(pol.to_json()) == pol
    assert Policy.from_json(pol.to_json()).pv.accumulation.acc_bits == 14
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((3, 16)), rng.standard_normal((300, 16))
    v = rng.standard_normal((300, 8)) + 4.0  # a large O: its low bits fall off 14 bits
    fp8 = flash.attention(q, k, v, "fa_fp8", block_n=128, policy=pol).out
    ref = flash.attention(q, k, v, "fa_fp8", block_n=128).out
    assert not np.array_equal(fp8, ref)
    # v > 0 here (v + 4, |v| <= 4 w.p. ~1), so |out| ~ sum_k w_k |v_k|: the accumulator's
    # part is within its constant (plus the FP32 adds and division of both runs, ~10 u)
    from amla_numerics.analysis.bounds.accumulation import _matmul_gamma

    assert np.all(v > 0)
    assert np.max(np.abs(fp8 - ref) / np.abs(ref)) <= _matmul_gamma(acc, 128, "fp32") + 1e-6


def _fraction_dot(a, b):
    """The exact sum of ``a_k b_k`` (Fractions), rounded once to float64 by Python."""
    return float(
        sum(
            (Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True)),
            Fraction(0),
        )
    )


def test_exact_model_fp64_output_is_the_exact_sum_rounded_once():
    # float64 operands (the "exact" policy's P and V): products need 106 bits, so a BLAS
    # dot product is off by ulps; the model must be the exact sum rounded once
    rng = np.random.default_rng(41)
    for trial in range(60):
        k = int(rng.integers(1, 200))
        a = rng.standard_normal((3, k)) * np.exp(rng.uniform(-40, 40, (3, k)))
        b = rng.standard_normal((k, 2))
        if trial % 3 == 0:  # cancellation: pairs of opposite products
            h = k // 2
            b[h : 2 * h, 0] = -b[:h, 0]
            a[:, h : 2 * h] = a[:, :h] * (1 + 2.0**-30)
        if trial % 5 == 0:  # products near and below float64's subnormal range
            a *= 2.0**-1000
        got = matmul(a, b, Accumulation("exact"), "fp64")
        for i in range(3):
            for j in range(2):
                want = _fraction_dot(a[i], b[:, j])
                assert got[i, j] == want, (trial, i, j, got[i, j], want)


def test_exact_model_fp64_output_exact_ties_and_batches():
    # an exact midpoint between two float64 numbers rounds to even; leading dims broadcast
    a = np.array([[1.0, 2.0**-53, 2.0**-53 * 2.0**-60]])
    b = np.array([[1.0], [1.0], [-1.0]])
    assert matmul(a, b, Accumulation("exact"), "fp64")[0, 0] == 1.0  # just below the tie
    above = matmul(a, np.abs(b), Accumulation("exact"), "fp64")[0, 0]
    assert above == 1.0 + 2.0**-52  # just above it
    assert matmul(a[:, :2], b[:2], Accumulation("exact"), "fp64")[0, 0] == 1.0  # tie: even
    a3 = np.stack([a, -a])
    out = matmul(a3, b, Accumulation("exact"), "fp64")
    assert out.shape == (2, 1, 1) and out[1, 0, 0] == -1.0


def test_saturated_tracks_every_block_of_an_rz_accumulator():
    """``saturated`` sees a block that overflowed even when later blocks bring the RZ
    accumulator back below the threshold (the result is finite and wrong); RNE overflow is
    inf, visible in the result, so it reports none; sums that cannot reach the threshold
    report none; the conservative rule of the other models flags the largest value."""
    acc = ACCUMULATION_PRESETS["h100"]
    n, ones = acc.block, np.ones((2 * acc.block, 1))
    a = np.array([[3e38] * n + [-3e38] * n, [3e38] + [-3e38] + [0.0] * (2 * n - 2)])
    assert saturated(a, ones, acc).tolist() == [[True], [False]]
    assert float(matmul(a, ones, acc)[0, 0]) < 0  # finite: max - 16 * 3e38, cut to -max
    rne = Accumulation("block_fma", block=n, out_rounding="rne")
    assert not saturated(a, ones, rne).any() and math.isinf(float(matmul(a, ones, rne)[0, 0]))
    assert not saturated(np.full((1, 8), 1e37), np.ones((8, 1)), acc).any()
    seq = Accumulation("fp32_seq", out_rounding="rz")
    big = np.array([[3e38, 3e38]])
    assert saturated(big, np.ones((2, 1)), seq).tolist() == [[True]]
