"""How tight the a priori bounds are: bound / measured for amla and fa_fp32 against N.

For each (workload, kv_len, block_n, seed) it measures the emulated output (policy
"ascend") against the certified reference and prints, per variant,

* ``ratio_max``: ``max_ij bound_ij / m_ij`` over ``max_ij |out_ij - ref_ij| / m_ij`` with
  ``m_ij = sum_k p_ik |v_kj|`` (the report's ``bound_cond_max / cond_err_max``);
* ``ratio_min``: ``min_ij bound_ij / |out_ij - ref_ij|`` (the closest any element comes to
  its bound; >= 1 when the bound holds);
* ``amla/fa``: amla's ``ratio_max`` over fa_fp32's (the goal: at most 3).

Usage::

    python experiments/bound_ratio.py --kv-len 2048 16384 --block-n 512 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, bound_inputs, elementwise_bound
from amla_numerics.analysis.workloads import make_workload


def measure(workload, kv_len, block_n, seed, head_dim, rows, variants):
    w = make_workload(workload, head_dim=head_dim, kv_len=kv_len, rows=rows, seed=seed)
    t0 = time.perf_counter()
    ref = reference.attention(w.q, w.k, w.v, w.scale, method="auto")
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = bound_inputs(w.q, w.k, w.v, w.scale)
    from amla_numerics.analysis.bounds.arrays import _mm

    mag = _mm(stats.w, stats.v_abs)
    t_in = time.perf_counter() - t0
    out = {}
    for variant in variants:
        res = flash.attention(w.q, w.k, w.v, variant, scale=w.scale, block_n=block_n)
        err = np.abs(np.asarray(res.out, np.float64) - ref)
        t0 = time.perf_counter()
        b = a_priori_bound(variant, head_dim=w.head_dim, kv_len=kv_len, block_n=block_n)
        det = elementwise_bound(b, stats)
        t_b = time.perf_counter() - t0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_max = np.max(det / mag) / np.max(err / mag)
            ratio_min = np.min(np.where(err > 0, det / err, np.inf))
        haz = sum(n for h, n in res.hazards.items() if h not in ("ok", "clamp"))
        out[variant] = (ratio_max, ratio_min, haz, t_b)
    return out, t_ref, t_in


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["random", "mla", "drift"])
    ap.add_argument("--kv-len", nargs="+", type=int, default=[2048, 16384])
    ap.add_argument("--block-n", nargs="+", type=int, default=[512])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--variants", nargs="+", default=["fa_fp32", "amla"])
    a = ap.parse_args()
    hdr = f"{'workload':8} {'N':>7} {'B':>4} {'seed':>4}"
    for v in a.variants:
        hdr += f" {v + ' max':>13} {v + ' min':>12}"
    print(hdr + "   amla/fa  t_ref t_bound")
    for wl in a.workloads:
        for n in a.kv_len:
            for bn in a.block_n:
                for seed in a.seeds:
                    r, t_ref, t_in = measure(wl, n, bn, seed, a.head_dim, a.rows, a.variants)
                    line = f"{wl:8} {n:7d} {bn:4d} {seed:4d}"
                    for v in a.variants:
                        line += f" {r[v][0]:13.3g} {r[v][1]:12.3g}"
                        if r[v][2]:
                            line += "(H)"
                    quot = (
                        r["amla"][0] / r["fa_fp32"][0]
                        if {"amla", "fa_fp32"} <= set(r)
                        else float("nan")
                    )
                    tb = max(x[3] for x in r.values()) + t_in
                    print(line + f"   {quot:7.2f} {t_ref:6.1f} {tb:6.2f}", flush=True)


if __name__ == "__main__":
    main()
