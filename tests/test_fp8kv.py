"""FlashMLA's FP8 KV cache (656 bytes per token) against a Fraction oracle, every E4M3 code."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound
from amla_numerics.analysis.kvquant import split_errors
from amla_numerics.flash.fp8kv import (
    BYTES_PER_TOKEN,
    dequantize_kv_fp8,
    kv_bf16,
    kv_fp8_roundtrip,
    quantize_kv_fp8,
    tile_scales,
)
from amla_numerics.formats import E4M3, FP32
from tests.oracle import oracle_round, pattern_values
from tests.tolerances import tol


def _oracle_scale(tile: np.ndarray) -> Fraction:
    amax = max(abs(Fraction(float(x))) for x in tile)
    a = Fraction(oracle_round(amax / 448, FP32, "rne"))
    a = max(a, Fraction(float(np.float32(1e-4))))
    p = Fraction(1)
    while p < a:
        p *= 2
    while p / 2 >= a:
        p /= 2
    return p


def _cases() -> np.ndarray:
    rng = np.random.default_rng(11)
    kv = rng.standard_normal((6, 576)) * np.exp(rng.uniform(-8, 8, size=(6, 1)))
    kv[1, :128] = 0.0  # an all-zero tile: the 1e-4 floor
    kv[2, 128:256] *= 1e-9  # tiny values: codes underflow to E4M3 subnormals / zero
    kv[3, 0] = 448.0 * 2.0**-3  # a tile max exactly 448 * 2**k: a = 2**k exactly
    kv[3, 1:128] = np.clip(kv[3, 1:128], -40, 40)
    return kv


def test_layout_and_quantisation_against_fractions():
    kv = _cases()
    packed = quantize_kv_fp8(kv)
    assert packed.shape == (6, BYTES_PER_TOKEN) == (6, 656) and packed.dtype == np.uint8
    xb = kv_bf16(kv)
    for row in range(6):
        codes = packed[row, :512].view(ml_dtypes.float8_e4m3fn).astype(np.float64)
        scales = packed[row, 512:528].view("<f4").astype(np.float64)
        rope = packed[row, 528:].view("<u2")
        assert np.array_equal(rope, xb[row, 512:].view(np.uint16))
        for t in range(4):
            tile = xb[row, 128 * t : 128 * (t + 1)].astype(np.float64)
            sigma = _oracle_scale(tile)
            assert Fraction(scales[t]) == sigma
            want = [oracle_round(Fraction(x) / sigma, E4M3, "rne") for x in tile]
            assert codes[128 * t : 128 * (t + 1)].tolist() == want
    np.testing.assert_array_equal(tile_scales(kv), packed[:, 512:528].view("<f4"))
    assert tile_scales(kv)[3, 0] == 2.0**-3


def test_dequantisation_exact_for_every_code_and_scale():
    codes = pattern_values(E4M3)
    finite = np.isfinite(codes)
    bits = np.arange(256, dtype=np.uint8)[finite]
    vals = codes[finite]
    for k in (-13, -5, 0, 3, 20):
        packed = np.zeros((2, 656), np.uint8)
        packed[:, :512] = np.resize(bits, 512)
        packed[:, 512:528] = np.full(4, 2.0**k, "<f4").view(np.uint8)
        out = dequantize_kv_fp8(packed)
        assert out.dtype == ml_dtypes.bfloat16
        got = out[:, :512].astype(np.float64)
        want = np.resize(vals, 512) * 2.0**k
        assert np.array_equal(got[0], want) and np.array_equal(got[1], want)


def test_roundtrip_error_within_the_cast_bound():
    kv = _cases()
    xb = kv_bf16(kv).astype(np.float64)
    back = kv_fp8_roundtrip(kv).astype(np.float64)
    sig = np.repeat(tile_scales(kv).astype(np.float64), 128, axis=-1)
    err = np.abs(back[:, :512] - xb[:, :512])
    # rne to E4M3 at scale sigma: <= 2**-4 |x| on the normal range, <= sigma 2**-10 below it
    half_sub = E4M3.min_subnormal / 2
    assert np.all(err <= np.maximum(E4M3.unit_roundoff * np.abs(xb[:, :512]), sig * half_sub))
    assert np.array_equal(back[:, 512:], xb[:, 512:])


def test_bad_inputs():
    with pytest.raises(ValueError, match="'kv'"):
        quantize_kv_fp8(np.zeros((2, 512)))
    with pytest.raises(ValueError, match="'kv'"):
        quantize_kv_fp8(np.full((1, 576), np.nan))
    with pytest.raises(ValueError, match="'packed'"):
        dequantize_kv_fp8(np.zeros((2, 655), np.uint8))


@pytest.mark.parametrize("variant", ["fa_fp32", "amla", "fa_fp8", "amla_fp8"])
def test_split_errors_and_kernel_bound(variant):
    from amla_numerics.analysis.workloads import make_workload

    w = make_workload("mla", head_dim=576, kv_len=300, rows=3, seed=4)
    parts = split_errors(w.q, w.k, variant, block_n=128)
    total = parts["out"] - parts["ref"]
    split = np.abs(parts["quant"] + parts["kernel"] - total)
    assert np.all(split <= tol("float64_split_sum") * np.abs(total).max())
    kvq = kv_fp8_roundtrip(w.k)
    direct = flash.mla_attention(w.q, kvq, variant, block_n=128).out
    np.testing.assert_array_equal(parts["out"], direct)
    b = a_priori_bound(variant, head_dim=576, kv_len=300, block_n=128)
    det = elementwise_bound(b, w.q, kvq, kvq[:, :512], flash.MLA_SCALE)
    assert np.all(np.abs(parts["kernel"]) <= det)
    assert np.max(np.abs(parts["quant"])) > 0  # the cache does change the answer
    with pytest.raises(ValueError, match="kv_cache"):
        flash.mla_attention(w.q, w.k, variant, kv_cache="fp4")
