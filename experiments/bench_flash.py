"""Benchmark: every flash variant on the MLA decode case against a plain float32 tiled loop.

Shape: 128 query rows, 8192 keys, Dk 576 / Dv 512 with V = K[:, :512], block 512, policy
"ascend" (BF16 inputs). The baseline is a plain float32 numpy FlashAttention-2 loop of the
same shape (sgemm, float32 exp, no emulation), timed in the same run. Targets: all variants
together <= 30 s; each variant <= 5x the baseline.

Run: ``.venv/bin/python experiments/bench_flash.py [--repeat 3] [--rows 128] [--keys 8192]``
"""

from __future__ import annotations

import argparse
import time

import ml_dtypes
import numpy as np

from amla_numerics import flash


def baseline(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, block: int) -> np.ndarray:
    """Plain float32 FlashAttention-2 (the yardstick: no rounding emulation)."""
    m = np.full(q.shape[0], -np.inf, np.float32)
    l = np.zeros(q.shape[0], np.float32)
    o = np.zeros((q.shape[0], v.shape[1]), np.float32)
    for lo in range(0, k.shape[0], block):
        s = (q @ k[lo : lo + block].T) * np.float32(scale)
        m_new = np.maximum(m, s.max(axis=1))
        p = np.exp(s - m_new[:, None])
        a = np.exp(m - m_new)
        l = a * l + p.sum(axis=1)
        o = a[:, None] * o + p @ v[lo : lo + block]
        m = m_new
    return o / l[:, None]


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--keys", type=int, default=8192)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    q = rng.standard_normal((args.rows, flash.MLA_DK)).astype(ml_dtypes.bfloat16)
    kv = rng.standard_normal((args.keys, flash.MLA_DK)).astype(ml_dtypes.bfloat16)
    q32, k32 = q.astype(np.float32), kv.astype(np.float32)
    v32 = np.ascontiguousarray(k32[:, : flash.MLA_DV])
    base = lambda: baseline(q32, k32, v32, flash.MLA_SCALE, args.block)  # noqa: E731
    print(
        f"MLA decode: rows {args.rows}, keys {args.keys}, Dk {flash.MLA_DK}, Dv {flash.MLA_DV}, "
        f"block {args.block}, policy ascend, best of {args.repeat} (interleaved with the "
        f"baseline), seed {args.seed}"
    )
    total = 0.0
    worst = 0.0
    for variant in flash.VARIANTS:
        run = lambda v=variant: flash.mla_attention(q, kv, v, block_n=args.block)  # noqa: E731
        t_base, t_var = [], []
        for _ in range(args.repeat):  # interleaved: both see the same machine load
            t_base.append(best_of(base, 1))
            t_var.append(best_of(run, 1))
        t, tb = min(t_var), min(t_base)
        total += sum(t_var) / len(t_var)
        worst = max(worst, t / tb)
        print(f"{variant:>16}: {t:7.3f} s  baseline {tb:6.3f} s  ratio {t / tb:5.2f}x")
    print(
        f"all variants (mean of one pass each): {total:.2f} s (target <= 30 s); "
        f"worst ratio {worst:.2f}x (target <= 5x)"
    )


if __name__ == "__main__":
    main()
