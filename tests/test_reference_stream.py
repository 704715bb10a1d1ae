"""The fast reference over key blocks (long contexts), its size guards, and the certified
roundings: against mpmath (exact to 40 digits) and the single-block path."""

from __future__ import annotations

import ml_dtypes
import mpmath
import numpy as np
import pytest

from amla_numerics.cli import main
from amla_numerics.reference import attention, certified_attention, fast
from amla_numerics.reference.rounded import rounded_reference
from amla_numerics.rounding import round_to
from amla_numerics.sizes import check_fits, check_grid, reference_cost


def _case(seed, m=5, n=500, dk=64, dv=32, dtype=ml_dtypes.bfloat16, big=1.0):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((m, dk)) * big).astype(dtype)
    k = rng.standard_normal((n, dk)).astype(dtype)
    v = rng.standard_normal((n, dv)).astype(dtype)
    return q, k, v


def _masks(m, n, seed=1):
    rng = np.random.default_rng(seed)
    b = rng.random((m, n)) < 0.5
    b[0] = False  # a fully masked row
    b[1] = False
    b[1, -30:] = True  # alive only in the last block
    f = np.where(rng.random((m, n)) < 0.3, -np.inf, rng.standard_normal((m, n)) * 3)
    return [None, b, f]


@pytest.mark.parametrize("mask_kind", [0, 1, 2])
def test_key_blocks_stay_within_the_certified_bound(monkeypatch, mask_kind):
    q, k, v = _case(mask_kind, big=3.0)
    mask = _masks(q.shape[0], k.shape[0])[mask_kind]
    one = certified_attention(q, k, v, 0.3, mask=mask, return_lse=True)
    monkeypatch.setattr(fast, "KEY_BLOCK", 96)  # 6 blocks, the last one short
    many = certified_attention(q, k, v, 0.3, mask=mask, return_lse=True)
    exact, lse = attention(
        q, k, v, 0.3, mask=mask, method="mpmath", return_mpf=True, return_lse=True, dps=40
    )
    dead = np.array([mpmath.isnan(x) for x in exact.reshape(-1)]).reshape(exact.shape)
    assert np.array_equal(np.isnan(many.out), dead)
    with mpmath.workprec(200):
        for y, x, b in zip(many.out[~dead], exact[~dead], many.bound[~dead], strict=True):
            assert abs(mpmath.mpf(float(y)) - x) <= b
        for y, x, b in zip(many.lse, lse, many.lse_bound, strict=True):
            if mpmath.isinf(x):
                assert y == -np.inf
            else:
                assert abs(mpmath.mpf(float(y)) - x) <= b
    # as tight as the single block (the bounds differ by rounding terms only)
    live = ~dead
    assert np.all(many.bound[live] <= 1.01 * one.bound[live] + 1e-300)
    # auto over key blocks: its mpmath fallback recomputes a row's exact dots lazily
    auto = attention(q, k, v, 0.3, mask=mask, method="auto")
    ref64 = np.array(
        [float(round_to(x, "fp64")) if not mpmath.isnan(x) else np.nan for x in exact.reshape(-1)]
    ).reshape(exact.shape)
    u32 = np.abs(ref64[live]) * 2.0**-23
    assert np.all(np.abs(auto[live] - ref64[live]) <= 1e-3 * u32 + 1e-300)


def test_auto_fallback_rows_over_key_blocks(monkeypatch):
    """Exact cancellation (v = +-1 alternating, equal scores): out = 0 exactly, the fast
    bound is loose there, so auto's mpmath rows must recompute the dots block-free."""
    q = np.zeros((2, 8), np.float32)
    k = np.zeros((256, 8), np.float32)
    v = np.ones((256, 2))
    v[::2] = -1
    monkeypatch.setattr(fast, "KEY_BLOCK", 64)
    out = attention(q, k, v, 1.0)
    assert np.array_equal(out, np.zeros((2, 2)))


def test_rounded_reference_is_correctly_rounded_even_at_a_tie():
    q, k, v = _case(7, m=3, n=200)
    r = rounded_reference(q, k, v)
    exact = attention(q, k, v, method="mpmath", return_mpf=True, dps=40)
    for name in ("fp32", "bf16"):
        want = np.array([float(round_to(x, name)) for x in exact.reshape(-1)]).reshape(exact.shape)
        assert np.array_equal(r.rounded[name].astype(np.float64), want)
    # two equal scores with v = 1 and 1 + 2**-23: out = 1 + 2**-24, an FP32 tie -> even (1.0)
    t = rounded_reference(np.zeros((1, 2)), np.zeros((2, 2)), np.array([[1.0], [1 + 2**-23]]), 1.0)
    assert t.rounded["fp32"][0, 0] == np.float32(1.0) and t.n_mpmath_rows == 1


def test_size_guards_refuse_what_cannot_fit(capsys):
    with pytest.raises(ValueError, match=r"needs about .* GiB of memory"):
        check_fits(reference_cost(128, 10**12, 576, 512), "x", available=64 * 2**30)
    # streamed: the inputs' float64 and limb copies (3 x 8 bytes a value) plus O(M block), no
    # M x N term
    big, small = reference_cost(128, 1 << 20, 576, 512), reference_cost(16, 1 << 20, 576, 512)
    assert big.bytes - small.bytes < 2**30 and big.bytes < 3 * 8 * (1 << 20) * 1088 * 1.2
    with pytest.raises(ValueError, match="head dim 1000000"):
        check_grid((1000000,), (2048,), 16, 9, 1, available=16 * 2**30)
    for argv in (
        ["report", "--kv-lens", "10000000000", "--no-throughput"],
        ["report", "--rows", "1000000000", "--no-throughput"],
        ["report", "--head-dims", "100000000", "--no-throughput"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "GiB of memory" in err and "Traceback" not in err


def test_keys_converted_block_by_block_give_the_same_result(monkeypatch):
    """BF16 keys (MLA: v = k[:, :Dv]) are converted to float64 one key block at a time: the
    result is bit for bit the one from the whole float64 copy (same formats), no float64 copy
    of the keys is kept, and the lazy fallback dots equal the dots over every key at once."""
    import dataclasses

    from amla_numerics.reference._inputs import prepare
    from amla_numerics.reference.exactdot import exact_dot_any

    rng = np.random.default_rng(5)
    k = rng.standard_normal((300, 48)).astype(ml_dtypes.bfloat16)
    q = (rng.standard_normal((4, 48)) * 2).astype(ml_dtypes.bfloat16)
    k64 = k.astype(np.float64)
    monkeypatch.setattr(fast, "KEY_BLOCK", 64)  # 5 blocks, the last one short
    for mask in (None, rng.random((4, 300)) < 0.6):
        prob = prepare(q, k, k[:, :40], 0.2, mask)
        assert prob.v_of_k and prob.k_in.dtype == ml_dtypes.bfloat16
        got = fast.fast_problem(prob, want_lse=True)
        assert "k" not in vars(prob) and "v" not in vars(prob)  # never converted whole
        whole64 = prepare(q, k, k[:, :40], 0.2, mask)  # converted whole, then the same path
        whole64 = dataclasses.replace(whole64, k_in=whole64.k, v_in=whole64.v, v_of_k=False)
        want = fast.fast_problem(whole64, want_lse=True)
        for name in ("out", "bound", "lse", "lse_bound"):
            assert getattr(got, name).tobytes() == getattr(want, name).tobytes()
        # a separate v array (not a view of k) takes the same path
        sep = certified_attention(q, k, k[:, :40].copy(), 0.2, mask=mask)
        assert sep.bound.tobytes() == want.bound.tobytes()
        whole = exact_dot_any(q.astype(np.float64), k64)
        for i in (0, 3):
            assert got.dots[0].row_mpf(i) == whole.row_mpf(i)
    assert np.array_equal(prob.v, k64[:, :40][None])  # the lazy float64 view, on demand
