"""Experiment: split-KV error against the number of splits S and the KV length N.

For ``fa_fp32`` and ``amla`` (policy ``"ascend"``: BF16 inputs and P cast, FP32 vector
stages), the ``"random"`` workload (Gaussian q, k, v, head dim 64, 8 query rows) at
N = 4K .. 1M keys (block 512), split into S = 1 .. 64 splits of whole blocks. Each split run
is combined both as CANN does (max/sum per split) and as FlashMLA does (log2 lse per split)
from the same partials. Against the certified reference (``reference.certified_attention``,
exact lse) we record per case and seed:

* ``cond_max``, ``cond_median``: ``|out - ref| / sum_k p_k |v_k|`` in units of ``2**-24``;
* ``bound_median`` (N <= ``--bound-max-n``, 32768 by default: the bounds' float64
  statistics dominate the run time at long N): the a priori split bound
  (:func:`amla_numerics.analysis.bounds.split_bound`; S = 1:
  :func:`~amla_numerics.analysis.bounds.elementwise_bound`) on the same scale;
* ``lse_err_max``: ``|lse - lse_ref|`` in units of ``2**-24`` (absolute, nats);
* ``combine_err_max``: the combine's own error, ``|out - out64|`` on the same scale, with
  ``out64`` the same partials combined in float64 (the combine's roundings alone).

The figure shows the median over seeds with the min-max interval over seeds.

Run (about 15 minutes on 2 shared cores)::

    PYTHONPATH=. .venv/bin/python experiments/splitkv_error.py \
        --out docs/figures/splitkv_error

Smaller: ``--lengths 4096 32768 --splits 1 2 4 --seeds 2``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import (
    a_priori_bound,
    elementwise_bound,
    softmax_weights,
    split_bound,
)
from amla_numerics.analysis.workloads import make_workload
from amla_numerics.flash.splitkv import combine_partials
from amla_numerics.flash.stages import exp_cr

U = 2.0**-24
FIELDS = (
    "variant",
    "combine",
    "kv_len",
    "splits",
    "seed",
    "cond_max",
    "cond_median",
    "bound_median",
    "bound_max_ratio",
    "lse_err_max",
    "lse_abs_max",
    "combine_err_max",
)


def measure(args, sink) -> list[dict]:
    rows: list[dict] = []
    for n in args.lengths:
        for seed in range(args.seeds):
            w = make_workload("random", head_dim=args.head_dim, kv_len=n, rows=args.rows, seed=seed)
            scale = w.scale
            t0 = time.time()
            ref = reference.certified_attention(w.q, w.k, w.v, w.scale, return_lse=True)
            _, p = softmax_weights(w.q, w.k, scale)
            mag = p @ np.abs(np.asarray(w.v, dtype=np.float64))
            print(f"N={n} seed={seed}: reference {time.time() - t0:.1f} s", flush=True)
            for variant in args.variants:
                for s in args.splits:
                    if s > -(-n // args.block_n):
                        continue
                    t0 = time.time()
                    res = flash.attention(
                        w.q, w.k, w.v, variant, scale=w.scale, block_n=args.block_n, splits=s
                    )
                    outs = {"cann": (res.out, res.lse)}
                    exact = res.out.astype(np.float64)
                    if res.splits is not None:
                        sp = res.splits
                        outs["flashmla"] = combine_partials(
                            sp.out, sp.m, sp.l, "flashmla", exp=exp_cr
                        )[:2]
                        parts64 = (x.astype(np.float64) for x in (sp.out, sp.m, sp.l))
                        exact = combine_partials(*parts64, "cann", exp=np.exp)[0]
                    else:
                        outs["flashmla"] = (res.out, res.lse)
                    for comb, (out, lse) in outs.items():
                        err = np.abs(out.astype(np.float64) - ref.out)
                        if n > args.bound_max_n:  # the bound's float64 statistics cost most
                            eb = np.full(err.shape, np.nan)
                        elif s == 1:
                            bd = a_priori_bound(
                                variant, head_dim=args.head_dim, kv_len=n, block_n=args.block_n
                            )
                            eb = elementwise_bound(bd, w.q, w.k, w.v, scale)
                        else:
                            eb = split_bound(
                                variant,
                                w.q,
                                w.k,
                                w.v,
                                scale,
                                splits=s,
                                block_n=args.block_n,
                                combine=comb,
                            )
                        rows.append(
                            {
                                "variant": variant,
                                "combine": comb,
                                "kv_len": n,
                                "splits": s,
                                "seed": seed,
                                "cond_max": float(np.max(err / mag) / U),
                                "cond_median": float(np.median(err / mag) / U),
                                "bound_median": float(np.median(eb / mag) / U),
                                "bound_max_ratio": float(np.max(err / eb)),
                                "lse_err_max": float(np.max(np.abs(lse - ref.lse)) / U),
                                "lse_abs_max": float(np.max(np.abs(ref.lse))),
                                "combine_err_max": float(
                                    np.max(np.abs(out.astype(np.float64) - exact) / mag) / U
                                ),
                            }
                        )
                    sink.writerows(rows[-2:])
                    print(
                        f"  {variant:8s} S={s:3d} {time.time() - t0:5.1f} s "
                        f"cond_max cann {rows[-2]['cond_max']:.0f} "
                        f"flashmla {rows[-1]['cond_max']:.0f} "
                        f"lse {rows[-2]['lse_err_max']:.1f} / {rows[-1]['lse_err_max']:.1f}",
                        flush=True,
                    )
    return rows


class _Flushing:
    """CSV rows written as they are measured (a long run keeps what it has)."""

    def __init__(self, writer, fh) -> None:
        self.writer, self.fh = writer, fh

    def writerows(self, rows) -> None:
        self.writer.writerows(rows)
        self.fh.flush()


def plot(rows: list[dict], path: Path, lengths, variants) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(variants), figsize=(6 * len(variants), 12), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(lengths)))
    for col, variant in enumerate(variants):
        for row, (key, label) in enumerate(
            [
                ("cond_max", "max error / sum p|v|  [2^-24]"),
                ("combine_err_max", "the combine's own error / sum p|v|  [2^-24]"),
                ("lse_err_max", "max |lse error|  [2^-24 nats]"),
            ]
        ):
            ax = axes[row][col]
            for n, colour in zip(lengths, colours, strict=True):
                for comb, style in (("cann", "-o"), ("flashmla", "--s")):
                    sel = [
                        r
                        for r in rows
                        if r["variant"] == variant and r["kv_len"] == n and r["combine"] == comb
                    ]
                    ss = sorted({r["splits"] for r in sel})
                    if not ss:
                        continue
                    vals = [[r[key] for r in sel if r["splits"] == s] for s in ss]
                    med = np.array([np.median(v) for v in vals])
                    lo = np.array([np.min(v) for v in vals])
                    hi = np.array([np.max(v) for v in vals])
                    if key == "combine_err_max":  # S = 1 has no combine: 0 on a log axis
                        keep = np.array(ss) > 1
                        ss, med, lo, hi = list(np.array(ss)[keep]), med[keep], lo[keep], hi[keep]
                        med, lo, hi = (np.maximum(a, 1e-3) for a in (med, lo, hi))
                    ax.plot(ss, med, style, color=colour, ms=4, label=f"N={n} {comb}")
                    ax.fill_between(ss, lo, hi, color=colour, alpha=0.15)
                    if key == "cond_max" and comb == "cann":
                        bm = [
                            np.median([r["bound_median"] for r in sel if r["splits"] == s])
                            for s in ss
                        ]
                        ax.plot(ss, bm, ":", color=colour, lw=1)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("splits S")
            ax.set_ylabel(label)
            ax.set_title(f"{variant}" + (" (dotted: median bound, CANN)" if row == 0 else ""))
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        "split-KV: error vs splits and KV length (random, d=64, 8 rows, BF16 inputs, "
        "median and min-max over seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768, 262144, 1048576])
    ap.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--variants", nargs="+", default=["fa_fp32", "amla"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--block-n", type=int, default=512)
    ap.add_argument(
        "--bound-max-n", type=int, default=32768, help="evaluate the bounds up to this N"
    )
    ap.add_argument("--out", type=Path, default=Path("docs/figures/splitkv_error"))
    ap.add_argument(
        "--plot-from", type=Path, default=None, help="redraw the figure from a CSV of this script"
    )
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.plot_from is not None:
        with open(args.plot_from) as fh:
            rows = [
                {k: (v if k in ("variant", "combine") else float(v)) for k, v in r.items()}
                for r in csv.DictReader(fh)
            ]
        for r in rows:
            r["kv_len"], r["splits"] = int(r["kv_len"]), int(r["splits"])
        lengths = sorted({r["kv_len"] for r in rows})
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        plot(rows, args.out.with_suffix(".png"), lengths, variants)
        print(f"wrote {args.out.with_suffix('.png')}")
        return
    with open(args.out.with_suffix(".csv"), "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=FIELDS)
        wr.writeheader()
        rows = measure(args, _Flushing(wr, fh))
    plot(rows, args.out.with_suffix(".png"), args.lengths, args.variants)
    print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
