"""Experiment: the constructed worst cases of the bounds' edge terms (docs/bounds.md,
"Known limits and adversarial checks"), each measured against the certified reference.

Prints, per case and variant, ``max |out - ref| / bound`` over the output elements outside
``garbage_mask()`` (at most 1 when the bound holds; near 1 when the case is tight), and for
the clipping and score-range hazards the count of flagged elements:

- ``clamp_cast``: AMLA's ``dn`` clamp over old keys whose P lies just above half the P
  cast's smallest subnormal (E4M3, E5M2, FP16 casts), jumps of 40 and 60 binades;
- ``split_deep``: a split 95-110 nats below the row max with ``|V| = 1e30`` (both
  combines);
- ``split_deep_fp64``: the same under the FP64 work format (``"exact"``), two keys 700-760
  nats apart with ``|V| = 1e150`` on the lower one (exact output from mpmath);
- ``align_floor``: Hopper's FP8 accumulator (``h100_fp8``) with BF16-subnormal V;
- ``o_clip``: policy ``"cann"`` with ``O = 2048 V`` beyond 1e10;
- ``overflow_garbage``: E4M3 P scaled by 256 times ``V = 1.5e38`` (O overflows FP32 at
  block 0, block 1's integer add makes it finite): the elements in ``garbage_mask()``;
- ``score_range``: BF16 q, k near ``2**66`` (products beyond FP32).

Run: ``python experiments/bound_limits.py`` (about a minute on one core).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound, split_bound
from amla_numerics.flash import ACCUMULATION_PRESETS, MatmulPolicy, get_policy
from amla_numerics.formats import BF16
from amla_numerics.rounding import round_to

LN2 = math.log(2.0)


def _bf16(x: np.ndarray) -> np.ndarray:
    return np.asarray(round_to(np.asarray(x, dtype=np.float64), BF16), dtype=np.float64)


def _two_part_keys(t: np.ndarray) -> np.ndarray:
    """Keys whose score with ``q = (1, 1)`` and scale 1 is ``t`` to 16 bits."""
    k = np.zeros((t.size, 2))
    k[:, 0] = _bf16(t)
    k[:, 1] = _bf16(t - k[:, 0])
    return k


def _ratio(out: np.ndarray, ref: np.ndarray, bound: np.ndarray, garbage: np.ndarray) -> float:
    err = np.abs(np.asarray(out, np.float64) - ref)
    r = np.where(garbage | (err == 0), 0.0, err / bound)
    return float(np.max(r))


def clamp_cast() -> list[tuple[str, str, float]]:
    rows = []
    bn = 32
    for variant, p_cast, p_frac in (
        ("amla_fp8", None, 1.05 * 2.0**-10),
        ("amla_fp8", "e5m2", 1.05 * 2.0**-17),
        ("amla", "fp16", 1.05 * 2.0**-25),
    ):
        pol = None if p_cast is None else get_policy("ascend").replace(p_cast=p_cast)
        for jump in (40, 60):
            x0 = 3.0 * LN2
            t = np.concatenate(
                [
                    [x0],
                    np.full(bn - 1, x0 + math.log(p_frac)),
                    [x0 + jump * LN2],
                    np.full(2 * bn - 1, x0 + jump * LN2 - 40.0),
                ]
            )
            q, k = np.ones((2, 2)), _two_part_keys(t)
            v = np.zeros((3 * bn, 4))
            v[1:bn] = 1e8
            res = flash.attention(q, k, v, variant, scale=1.0, block_n=bn, policy=pol)
            b = a_priori_bound(variant, head_dim=2, kv_len=3 * bn, block_n=bn, policy=pol)
            det = elementwise_bound(b, q, k, v, 1.0)
            ref = reference.attention(q, k, v, 1.0)
            label = f"{variant} p_cast={p_cast or 'e4m3'} jump={jump}"
            rows.append(("clamp_cast", label, _ratio(res.out, ref, det, res.garbage_mask())))
    return rows


def split_deep() -> list[tuple[str, str, float]]:
    rows = []
    bn = 32
    for variant in ("fa_fp32", "amla", "lazy"):
        for combine in ("cann", "flashmla"):
            worst = 0.0
            for gap in (95.0, 103.5, 104.49, 110.0):
                s = np.full(3 * bn, -40.0)
                s[bn] = 0.0
                s[:bn] = -gap + np.linspace(0.0, 0.5, bn)
                q, k = np.ones((2, 2)), _two_part_keys(s)
                v = np.zeros((3 * bn, 4))
                v[:bn] = 1e30
                res = flash.attention(
                    q, k, v, variant, scale=1.0, block_n=bn, splits=3, combine=combine
                )
                e = split_bound(variant, q, k, v, 1.0, splits=3, block_n=bn, combine=combine)
                ref = reference.attention(q, k, v, 1.0)
                worst = max(worst, _ratio(res.out, ref, e, res.garbage_mask()))
            rows.append(("split_deep", f"{variant} combine={combine}", worst))
    return rows


def split_deep_fp64() -> list[tuple[str, str, float]]:
    rows = []
    pol = get_policy("exact")
    for variant in ("fa_fp32", "amla"):
        for combine in ("cann", "flashmla"):
            worst = mpmath.mpf(0)
            for gap in (700.0, 741.0, 744.035, 744.6, 760.0):
                q, k = np.array([[1.0]]), np.array([[-gap], [0.0]])
                v = np.array([[1e150], [0.0]])
                kw = {"splits": 2, "block_n": 1, "combine": combine, "policy": pol}
                res = flash.attention(q, k, v, variant, scale=1.0, **kw)
                e = split_bound(variant, q, k, v, 1.0, **kw)
                with mpmath.workdps(80):
                    w = mpmath.exp(-mpmath.mpf(gap))
                    err = abs(mpmath.mpf(float(res.out[0, 0])) - mpmath.mpf(1e150) * w / (1 + w))
                    worst = max(worst, err / mpmath.mpf(float(e[0, 0])))
            rows.append(("split_deep_fp64", f"{variant} combine={combine}", float(worst)))
    return rows


def overflow_garbage() -> list[tuple[str, str, float]]:
    rows = []
    pol = get_policy("ascend").replace(p_cast="e4m3", p_cast_rounding="rne", p_scale=256.0)
    q, k, v = np.array([[1.0]]), np.array([[0.0], [4.0]]), np.array([[1.5e38], [1.0]])
    for variant in ("amla", "amla_exactcomp"):
        res = flash.attention(q, k, v, variant, scale=1.0, block_n=1, policy=pol)
        b = a_priori_bound(variant, head_dim=1, kv_len=2, block_n=1, policy=pol)
        e = elementwise_bound(b, q, k, v, 1.0)
        ref = reference.attention(q, k, v, 1.0)
        g = res.garbage_mask()
        label = f"{variant} overflow={res.hazards['overflow']} garbage={int(g.sum())}"
        rows.append(("overflow_garbage", label, _ratio(res.out, ref, e, g)))
    return rows


def align_floor() -> list[tuple[str, str, float]]:
    pol = get_policy("ascend").replace(
        pv=MatmulPolicy("bf16", ACCUMULATION_PRESETS["h100_fp8"], "fp32")
    )
    n = 512
    t = np.full(n, math.log(129 * 2.0**-20))
    t[0] = 0.0
    q, k = np.ones((2, 2)), _two_part_keys(t)
    v = np.full((n, 3), 127 * 2.0**-133)
    v[0] = 2.0**-133
    ref = reference.attention(q, k, v, 1.0)
    rows = []
    for variant in ("fa_fp32", "naive"):
        res = flash.attention(q, k, v, variant, scale=1.0, block_n=n, policy=pol)
        b = a_priori_bound(variant, head_dim=2, kv_len=n, block_n=n, policy=pol)
        det = elementwise_bound(b, q, k, v, 1.0)
        rows.append(("align_floor", variant, _ratio(res.out, ref, det, res.garbage_mask())))
    return rows


def hazards() -> list[tuple[str, str, float]]:
    from amla_numerics.flash.emulator import CLIP_HAZARD, RANGE_HAZARD

    rows = []
    n = 2048
    q, k = np.ones((2, 4)), np.zeros((n, 4))
    v = np.empty((n, 3))
    v[:, 0], v[:, 1], v[:, 2] = 1e7, 1e6, -2e7
    for variant in ("fa_fp32", "amla"):
        res = flash.attention(q, k, v, variant, scale=0.5, block_n=512, policy="cann")
        b = a_priori_bound(variant, head_dim=4, kv_len=n, block_n=512, policy="cann")
        det = elementwise_bound(b, q, k, v, 0.5)
        ref = np.broadcast_to(v[0], res.out.shape)
        label = f"{variant} flagged={res.hazards[CLIP_HAZARD]}"
        rows.append(("o_clip", label, _ratio(res.out, ref, det, res.garbage_mask())))
    rng = np.random.default_rng(0)
    q = _bf16(rng.standard_normal((3, 4)))
    q[0] *= 2.0**66
    k = _bf16(rng.standard_normal((24, 4)) * 2.0**66)
    v = _bf16(rng.standard_normal((24, 2)))
    for variant in ("fa_fp32", "amla", "fa4"):
        res = flash.attention(q, k, v, variant, scale=2.0**-66, block_n=8)
        out = np.asarray(res.out)
        unflagged = int(np.count_nonzero(~np.isfinite(out) & ~res.garbage_mask()))
        label = f"{variant} flagged={res.hazards.get(RANGE_HAZARD, 0)}"
        rows.append(("score_range", label, float(unflagged)))
    return rows


def main() -> None:
    print(f"{'case':<12} {'run':<34} max |err|/bound (score_range: unflagged non-finite)")
    for fn in (clamp_cast, split_deep, split_deep_fp64, overflow_garbage, align_floor, hazards):
        for case, label, value in fn():
            print(f"{case:<12} {label:<34} {value:.3g}")


if __name__ == "__main__":
    main()
