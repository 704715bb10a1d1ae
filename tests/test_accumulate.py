"""Matrix-unit accumulation models and row sums against exact Fraction oracles on small tiles."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amla_numerics.flash.accumulate import (
    ACCUMULATION_PRESETS,
    Accumulation,
    add_rounded,
    matmul,
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


def oracle_block_fma(a, b, acc: Accumulation):
    out = []
    for row in a:
        line = []
        for col in b.T:
            prods = [F(x) * F(y) for x, y in zip(row, col, strict=True)]
            c = F(0)
            for k0 in range(0, len(prods), acc.block):
                terms = [c, *prods[k0 : k0 + acc.block]]
                nz = [abs(t) for t in terms if t != 0]
                if not nz:
                    c = F(0)
                    continue
                e = max(_floor_log2(t) for t in nz)
                quantum = F(2) ** (e - 23 - acc.extra_bits)
                c = _r32(sum(_cut(t, quantum, acc.align_rounding) for t in terms), acc.out_rounding)
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
