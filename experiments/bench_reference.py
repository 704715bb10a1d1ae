"""Benchmark: the attention reference on the MLA decode case, and the mpmath path's rate.

1. MLA decode: 128 query rows, Dk = 576, Dv = 512 with V = K[:, :512],
   N = 8192 keys, BF16 inputs, scale 1/sqrt(192). Times (best of ``--repeats``, calls
   interleaved) of
   ``attention(..., method="auto")`` and ``method="fast"``, against a plain float64 numpy
   softmax-attention of the same shape measured in the same run, written two ways: the
   natural ``p @ v`` and the BLAS-friendly ``(v.T @ p.T).T`` (on this machine's OpenBLAS the
   first is several times slower for a 128 x 8192 by 8192 x 512 product). Targets: auto
   <= 20 s and <= 10x the baseline. Also prints how many elements auto sent to mpmath and
   the largest certified bound in FP32 ULPs.
2. The mpmath path: rows per second at dps 30 and 50 (Dk 576, Dv 512, N = ``--mp-n``).
3. ``--sweep``: long contexts: ``method="auto"`` against the
   BLAS-friendly float64 numpy baseline from 1K to 1M keys (``--sweep-n``) for 16 and 128
   query rows (``--sweep-m``), Dk 576, Dv 512 = K[:, :512], BF16; the reference streams over
   key blocks of ``KEY_BLOCK`` keys, converting each to float64 when it is used, so its
   working memory is ``O((M + Dk) * KEY_BLOCK)`` beside the BF16 inputs; ``--memory`` prints
   each call's peak (tracemalloc) beside the size a float64 copy of k would have. The
   baseline needs that float64 copy: above ``--baseline-max-mb`` the streamed float64
   baseline (:func:`streamed`, marked ``s``; its time includes the BF16 -> float64
   conversion, which the whole-array baseline's does not) is timed instead. Target: <= 10x.

Run: ``.venv/bin/python experiments/bench_reference.py`` (about a minute on 2 cores);
``--sweep`` takes several minutes (the 1M-key cases dominate).
"""

from __future__ import annotations

import argparse
import math
import time

import ml_dtypes
import numpy as np

from amla_numerics.formats import FP32
from amla_numerics.reference import attention, certified_attention
from amla_numerics.ulp import ulp


def best_of_interleaved(fns: list, repeats: int) -> tuple[list[float], list]:
    """Best time of each function, the calls interleaved so that load changes on a
    shared machine hit every case alike."""
    best = [math.inf] * len(fns)
    outs = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, outs


def plain(q, k, v, scale, blas_friendly: bool):
    s = (q @ k.T) * scale
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    o = (v.T @ p.T).T if blas_friendly else p @ v
    return o / p.sum(axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--mp-n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="long-context sweep only")
    ap.add_argument("--sweep-n", default="1024,8192,65536,262144,1048576")
    ap.add_argument("--sweep-m", default="16,128")
    ap.add_argument(
        "--memory", action="store_true", help="sweep: also the peak memory (tracemalloc)"
    )
    ap.add_argument(
        "--baseline-max-mb",
        type=float,
        default=2000.0,
        help="sweep: skip the float64 baseline when its copy of k would exceed this (MB)",
    )
    args = ap.parse_args()
    if args.sweep:
        sweep(args)
        return
    rng = np.random.default_rng(args.seed)
    m, dk, dv, n = 128, 576, 512, args.n
    k = rng.standard_normal((n, dk)).astype(ml_dtypes.bfloat16)
    q = rng.standard_normal((m, dk)).astype(ml_dtypes.bfloat16)
    v = k[:, :dv]
    scale = 1 / math.sqrt(192)
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    print(f"MLA decode: M={m} Dk={dk} Dv={dv} N={n} bf16, scale 1/sqrt(192), seed {args.seed}")
    (t_nat, t_blas, t_fast, t_auto), (_, ref64, res, out) = best_of_interleaved(
        [
            lambda: plain(q64, k64, v64, scale, False),
            lambda: plain(q64, k64, v64, scale, True),
            lambda: certified_attention(q, k, v, scale),
            lambda: attention(q, k, v, scale, method="auto"),
        ],
        args.repeats,
    )
    tol = 1e-3 * ulp(res.out, FP32)
    loose = int((~(res.bound <= tol)).sum())
    rows = [
        ("float64 numpy, p @ v (baseline)", t_nat),
        ("float64 numpy, (v.T @ p.T).T (baseline)", t_blas),
        ('certified_attention ("fast" + bounds)', t_fast),
        ('attention(method="auto")', t_auto),
    ]
    print(f"{'case':45s} {'seconds':>9s} {'x p@v':>7s} {'x BLAS':>7s}")
    for name, t in rows:
        print(f"{name:45s} {t:9.3f} {t / t_nat:7.2f} {t / t_blas:7.2f}")
    print(
        f"auto: {loose} of {out.size} elements recomputed with mpmath; "
        f"max bound {float(np.max(res.bound / ulp(res.out, FP32))):.2e} FP32 ULP; "
        f"max |auto - float64 numpy| "
        f"{float(np.max(np.abs(out - ref64) / ulp(out, FP32))):.3f} FP32 ULP"
    )
    print(
        f"targets: auto <= 20 s: {t_auto <= 20}; auto <= 10x baseline (p @ v): "
        f"{t_auto <= 10 * t_nat}; (BLAS-friendly): {t_auto <= 10 * t_blas}"
    )
    # the analysis workload: 16 query rows against the same keys
    q16, q16_64 = q[:16], q64[:16]
    (t16_base, t16_auto), _ = best_of_interleaved(
        [
            lambda: plain(q16_64, k64, v64, scale, False),
            lambda: attention(q16, k, v, scale, method="auto"),
        ],
        args.repeats,
    )
    print(
        f"M=16 (analysis workload): float64 numpy {t16_base:.3f} s, auto {t16_auto:.3f} s "
        f"({t16_auto / t16_base:.1f}x)"
    )
    mk = k[: args.mp_n]
    for dps in (30, 50):
        t0 = time.perf_counter()
        rows_done = 2
        attention(q[:rows_done], mk, mk[:, :dv], scale, method="mpmath", dps=dps)
        t = time.perf_counter() - t0
        print(
            f"mpmath path dps={dps}: {rows_done / t:.2f} rows/s "
            f"(N={args.mp_n}, Dk={dk}, Dv={dv}; includes the 2*dps ladder on 2 rows)"
        )


def _peak_mb(fn) -> float:
    """Peak memory numpy allocated during one call of ``fn`` (tracemalloc), in MB."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def streamed(q, k, scale, dv: int, block: int = 1 << 16):
    """A float64 numpy softmax-attention over key blocks (online softmax), each block of the
    BF16 keys converted when it is used: the baseline where a float64 copy of k does not fit.
    Unlike :func:`plain`, its time includes the conversion of the inputs to float64."""
    q64 = q.astype(np.float64)
    m = np.full(q.shape[0], -np.inf)
    l = np.zeros(q.shape[0])
    o = np.zeros((q.shape[0], dv))
    for lo in range(0, k.shape[0], block):
        kb = k[lo : lo + block].astype(np.float64)
        s = (q64 @ kb.T) * scale
        mn = np.maximum(m, s.max(axis=1))
        a = np.exp(m - mn)
        p = np.exp(s - mn[:, None])
        l = l * a + p.sum(axis=1)
        o = o * a[:, None] + (kb[:, :dv].T @ p.T).T
        m = mn
    return o / l[:, None]


def _sweep_times(q, k, v, scale, reps: int, with_baseline: bool) -> list[float]:
    """Best times of auto and the float64 baseline, interleaved: the whole-array baseline
    when its float64 copy fits (``with_baseline``; the copies are freed on return), else the
    streamed one (:func:`streamed`)."""
    fns = [lambda: attention(q, k, v, scale, method="auto")]
    if with_baseline:
        q64, k64 = q.astype(np.float64), k.astype(np.float64)
        v64 = k64[:, :512]  # a view, as v is of k: one float64 copy of the keys
        fns.append(lambda: plain(q64, k64, v64, scale, True))
    else:
        fns.append(lambda: streamed(q, k, scale, v.shape[-1]))
    return best_of_interleaved(fns, reps)[0]


def sweep(args) -> None:
    """Long contexts: auto vs the BLAS-friendly float64 baseline, interleaved."""
    from amla_numerics.reference.fast import KEY_BLOCK

    rng = np.random.default_rng(args.seed)
    scale = 1 / math.sqrt(192)
    ns = [int(t) for t in args.sweep_n.split(",")]
    ms = [int(t) for t in args.sweep_m.split(",")]
    k_all = np.concatenate(  # generated in chunks: no 8-byte copy of the largest k
        [
            rng.standard_normal((min(1 << 16, max(ns) - j), 576)).astype(ml_dtypes.bfloat16)
            for j in range(0, max(ns), 1 << 16)
        ]
    )
    q_all = rng.standard_normal((max(ms), 576)).astype(ml_dtypes.bfloat16)
    print(
        f"sweep: Dk 576, Dv 512 = K[:, :512], BF16, KEY_BLOCK {KEY_BLOCK}, best of "
        f"{args.repeats} (interleaved)"
    )
    print(
        f"{'M':>4s} {'N':>8s} {'float64 s':>10s} {'auto s':>8s} {'ratio':>6s} {'peak MB':>8s} "
        f"{'inputs MB':>9s}"
    )
    for m in ms:
        for n in ns:
            k = k_all[:n]
            q = q_all[:m]
            v = k[:, :512]
            reps = args.repeats if n <= 262144 else max(1, args.repeats // 2)
            inputs = 8 * n * 576 / 2**20  # k (and its prefix v) as float64
            whole = inputs <= args.baseline_max_mb
            times = _sweep_times(q, k, v, scale, reps, whole)
            t_auto = times[0]
            base = f"{times[1]:9.3f}" + (" " if whole else "s")  # s: the streamed baseline
            ratio = f"{t_auto / times[1]:6.1f}"
            peak = _peak_mb(lambda a=q, b=k, c=v: attention(a, b, c, scale)) if args.memory else 0
            print(
                f"{m:4d} {n:8d} {base} {t_auto:8.3f} {ratio} {peak:8.0f} {inputs:9.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
