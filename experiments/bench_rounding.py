"""Benchmark: round_to of 10**7 float32 values to BF16, against ml_dtypes' astype.

Prints the best-of-7 wall time of each and the ratio (target: round_to "rne" within 3x
of astype), plus the hand-written bit path ("rna", Ascend's CAST_ROUND, which ml_dtypes
cannot do) and the generic float64 path, each as a ratio to the same astype baseline
measured in the same run.

Run: ``.venv/bin/python experiments/bench_rounding.py``
"""

from __future__ import annotations

import time

import ml_dtypes
import numpy as np

from amla_numerics import BF16, round_to


def best_of(fn, repeats: int = 7) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    x = np.random.default_rng(0).standard_normal(10**7).astype(np.float32)
    x64 = x.astype(np.float64)
    base = best_of(lambda: x.astype(ml_dtypes.bfloat16))
    rows = [
        ("ml_dtypes astype (baseline)", base),
        ('round_to(x, BF16) "rne"', best_of(lambda: round_to(x, BF16))),
        ('round_to(x, BF16, "rna") bit path', best_of(lambda: round_to(x, BF16, "rna"))),
        ("round_to(x64, BF16) generic float64 path", best_of(lambda: round_to(x64, BF16), 3)),
    ]
    print(f"{'case (10**7 float32 -> bf16)':45s} {'seconds':>9s} {'ratio':>7s}")
    for name, t in rows:
        print(f"{name:45s} {t:9.4f} {t / base:7.2f}")


if __name__ == "__main__":
    main()
