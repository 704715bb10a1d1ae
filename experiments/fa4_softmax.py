"""Experiment: FlashAttention-4's softmax (variant ``fa4``) against ``lazy`` and ``fa_fp32``.

``fa4`` differs from ``lazy`` (the same stale-max rescale with tau = 8) only in how it forms
P: the scale folded into one FMA and FA4's degree-3 polynomial exp2 instead of a correctly
rounded exp. Panel 1: the polynomial exp2's relative error on a dense grid of x (the
sawtooth of ``p(f) / 2**f - 1`` repeated every integer, with the bound
``FA4_EX2_REL_ERR``). Panel 2: the attention error on the report's workloads (random,
peaky, drift, sink at d = 64; mla at d = 576), N = 4096, 16 rows, block 512, seeds 0-2,
policy "ascend", against the certified reference: ``rel_fro = ||out - ref||_F / ||ref||_F``
(median, min-max over seeds), with ``bound_ratio`` (max err / a priori bound) in the CSV.

Writes ``fa4_softmax.csv`` and ``fa4_softmax.png`` into ``--out`` (default
``docs/figures``). Run: ``PYTHONPATH=. .venv/bin/python experiments/fa4_softmax.py``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _results import experiment_main  # experiments/_results.py (the script's folder)

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound
from amla_numerics.analysis.metrics import magnitude_scale
from amla_numerics.analysis.workloads import make_workload
from amla_numerics.flash.fa4 import FA4_EX2_REL_ERR, ex2_emu

VARIANTS = ("fa_fp32", "lazy", "fa4")
WORKLOADS = (("random", 64), ("peaky", 64), ("drift", 64), ("sink", 64), ("mla", 576))


def run(seeds, *, n=4096, rows=16, block=512):
    records = []
    for name, d in WORKLOADS:
        for seed in seeds:
            w = make_workload(name, head_dim=d, kv_len=n, rows=rows, seed=seed)
            ref = np.asarray(reference.attention(w.q, w.k, w.v, w.scale, method="auto"))
            mag = magnitude_scale(w.q, w.k, w.v, w.scale)
            for variant in VARIANTS:
                res = flash.attention(
                    w.q, w.k, w.v, variant, scale=w.scale, block_n=block, trace=True
                )
                err = np.abs(np.asarray(res.out, np.float64) - ref)
                b = a_priori_bound(variant, head_dim=d, kv_len=n, block_n=block)
                det = elementwise_bound(b, w.q, w.k, w.v, w.scale)
                records.append(
                    {
                        "workload": name,
                        "head_dim": d,
                        "variant": variant,
                        "seed": seed,
                        "rel_fro": float(np.linalg.norm(err) / np.linalg.norm(ref)),
                        "cond_err": float(np.max(err / mag)),
                        "bound_ratio": float(np.max(err / det)),
                        "rescale_rate": float(res.trace.rescaled[1:].mean()),
                    }
                )
    return records


def plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
    x = np.linspace(-6.0, 3.0, 200001).astype(np.float32)
    rel = ex2_emu(x).astype(np.float64) / np.exp2(x.astype(np.float64)) - 1
    axes[0].plot(x, rel, lw=0.6)
    for sgn in (1, -1):
        axes[0].axhline(sgn * FA4_EX2_REL_ERR, color="r", ls="--", lw=1)
    axes[0].set(
        xlabel="x",
        ylabel="ex2_emu(x) / 2**x - 1",
        title=f"FA4 polynomial exp2: relative error (bound {FA4_EX2_REL_ERR:.3g}, red)",
    )
    names = [n for n, _ in WORKLOADS]
    pos = np.arange(len(names))
    width = 0.27
    colors = {"fa_fp32": "tab:blue", "lazy": "tab:green", "fa4": "tab:red"}
    for i, variant in enumerate(VARIANTS):
        med, lo, hi = [], [], []
        for name in names:
            vals = [
                r["rel_fro"] for r in records if r["workload"] == name and r["variant"] == variant
            ]
            med.append(np.median(vals))
            lo.append(min(vals))
            hi.append(max(vals))
        axes[1].bar(
            pos + (i - 1) * width,
            med,
            width,
            yerr=[np.subtract(med, lo), np.subtract(hi, med)],
            capsize=3,
            color=colors[variant],
            label=variant,
        )
    axes[1].set_xticks(pos, names)
    axes[1].set(
        yscale="log",
        ylabel="||out - ref||_F / ||ref||_F",
        title="attention error, N 4096, block 512 (median, min-max over 3 seeds)",
    )
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    records, _ = experiment_main(
        argv,
        doc=__doc__ or "",
        name="fa4_softmax",
        quick_help="1 seed, N = 1024, 4 rows",
        run=lambda quick: run([0], n=1024, rows=4) if quick else run([0, 1, 2]),
        plot=plot,
    )
    print("workload  variant  seed  rel_fro   cond_err  bound_ratio  rescale_rate")
    for r in records:
        print(
            f"{r['workload']:8s} {r['variant']:8s} {r['seed']:4d} {r['rel_fro']:9.2e} "
            f"{r['cond_err']:9.2e} {r['bound_ratio']:11.2e} {r['rescale_rate']:8.3f}"
        )


if __name__ == "__main__":
    main()
