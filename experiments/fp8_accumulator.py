"""Experiment: FP8 P V (``fa_fp8``) with the exact FP32 accumulation against Hopper's block
FMA: the BF16 path (``"h100"``) and the FP8 path's 14-bit accumulator (``"h100_fp8"``).

Workload: :func:`amla_numerics.analysis.sinks.sink_workload` with ``Delta = 8`` (4 sink
keys), d = 64, N = 4096 keys, 16 rows, block 512, BF16 inputs, seeds 0-2; static P scale
``S`` in {1, 448}. ``fa_fp8`` casts P to E4M3 (rne, satfinite). Two V formats:

- ``v=bf16``: the workload's V, as ``fa_fp8`` is defined (a kernel with an E4M3 P and a
  BF16 V would run the BF16 matrix path: ``"h100"`` is its accumulator);
- ``v=e4m3``: V rounded to E4M3 first (FlashAttention-3's FP8 mode, both operands FP8: the
  ``"h100_fp8"`` accumulator is the physical one); the reference uses the same rounded V,
  so the error is the kernel's, not V's quantisation.

Accumulations of the P V product (policy ``pv``): ``exact`` (the exact sum rounded once
to FP32), ``h100`` (16 products per block, 2 extra bits, RZ) and ``h100_fp8`` (32 products,
14-bit accumulator, RZ); :data:`~amla_numerics.flash.accumulate.ACCUMULATION_PRESETS`.
The emulator forms each KV block's ``P_j V_j`` on its own and adds it to O in FP32, so the
reduced accumulator acts inside each 512-key block (16 chained 32-product steps); a kernel
that accumulates O itself in the matrix unit across blocks (FlashAttention-3) would carry
O through it too. For each run:

- ``cond_err``: ``max_ij |out - ref| / sum_k w_ik |v_kj|`` (dimensionless; the denominator
  is :func:`~amla_numerics.analysis.metrics.magnitude_scale`, ``ref`` the certified
  reference on the same inputs);
- ``cond_vs_exact``: the same scale of ``|out - out_exact|``, ``out_exact`` the run with
  the exact accumulation (the accumulator's own contribution, apart from the E4M3 cast's);
- ``cond_bound``: the a priori bound (:func:`~amla_numerics.analysis.bounds.a_priori_bound`,
  which charges the block FMA's alignment and reduced-width rounding) in the same units,
  maximum over elements; ``bound_ratio``: ``max err / bound`` (must be <= 1);
- ``pv_gamma``: the bound's relative constant of one block's P V tile.

Writes ``fp8_accumulator.csv`` and ``fp8_accumulator.png`` into ``--out`` (default
``docs/figures``) and prints the table. Run:
``PYTHONPATH=. .venv/bin/python experiments/fp8_accumulator.py [--quick] [--out DIR]``
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
from _results import experiment_main  # experiments/_results.py (the script's folder)

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound
from amla_numerics.analysis.metrics import magnitude_scale
from amla_numerics.analysis.sinks import sink_workload
from amla_numerics.flash.accumulate import ACCUMULATION_PRESETS, Accumulation
from amla_numerics.flash.policy import MatmulPolicy, get_policy

DELTA = 8.0
ACCUMULATIONS = {
    "exact": Accumulation("exact"),
    "h100": ACCUMULATION_PRESETS["h100"],
    "h100_fp8": ACCUMULATION_PRESETS["h100_fp8"],
}


def run(seeds, scales, *, d=64, n=4096, rows=16, block=512):
    records = []
    for seed in seeds:
        w = sink_workload(DELTA, head_dim=d, kv_len=n, rows=rows, seed=seed)
        for v_fmt in ("bf16", "e4m3"):
            v = w.v
            if v_fmt == "e4m3":
                v = np.asarray(w.v, np.float64).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
            ref = reference.attention(w.q, w.k, v, w.scale, method="auto")
            mag = magnitude_scale(w.q, w.k, v, w.scale)
            for sp in scales:
                base = None
                for name, acc in ACCUMULATIONS.items():
                    pol = get_policy("ascend").replace(
                        p_scale=sp, pv=MatmulPolicy("bf16", acc, "fp32")
                    )
                    res = flash.attention(
                        w.q, w.k, v, "fa_fp8", scale=w.scale, block_n=block, policy=pol
                    )
                    out = np.asarray(res.out, np.float64)
                    base = out if base is None else base  # "exact" runs first
                    err = np.abs(out - ref)
                    b = a_priori_bound("fa_fp8", head_dim=d, kv_len=n, block_n=block, policy=pol)
                    bnd = elementwise_bound(b, w.q, w.k, v, w.scale)
                    records.append(
                        {
                            "v_format": v_fmt,
                            "p_scale": sp,
                            "accumulation": name,
                            "seed": seed,
                            "cond_err": float(np.max(err / mag)),
                            "cond_vs_exact": float(np.max(np.abs(out - base) / mag)),
                            "cond_bound": float(np.max(bnd / mag)),
                            "bound_ratio": float(np.max(err / bnd)),
                            "pv_gamma": b.pv_gamma,
                        }
                    )
    return records


def table(records) -> str:
    """Mean [min, max] over seeds of each (V format, S, accumulation)."""
    lines = [
        f"{'V':5} {'S':>5} {'accumulation':12} {'cond_err mean [min, max]':34} "
        f"{'vs exact acc: mean [min, max]':34} "
        f"{'cond_bound':>10} {'max err/bound':>13} {'pv_gamma':>9}"
    ]
    keys = sorted(
        {(r["v_format"], r["p_scale"], r["accumulation"]) for r in records},
        key=lambda k: (k[0], k[1], list(ACCUMULATIONS).index(k[2])),
    )
    for vf, sp, acc in keys:
        sel = [
            r for r in records if (r["v_format"], r["p_scale"], r["accumulation"]) == (vf, sp, acc)
        ]
        ce = [r["cond_err"] for r in sel]
        cx = [r["cond_vs_exact"] for r in sel]
        lines.append(
            f"{vf:5} {sp:5g} {acc:12} {np.mean(ce):9.3e} [{min(ce):9.3e}, {max(ce):9.3e}] "
            f"{np.mean(cx):9.3e} [{min(cx):9.3e}, {max(cx):9.3e}] "
            f"{max(r['cond_bound'] for r in sel):10.3e} "
            f"{max(r['bound_ratio'] for r in sel):13.3e} {sel[0]['pv_gamma']:9.2e}"
        )
    return "\n".join(lines)


def plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted({r["p_scale"] for r in records})
    fig, axes = plt.subplots(2, len(scales), figsize=(6.5 * len(scales), 8.4), squeeze=False)
    colors = {"exact": "tab:gray", "h100": "tab:blue", "h100_fp8": "tab:red"}
    for col, sp in enumerate(scales):
        for i, vf in enumerate(("bf16", "e4m3")):
            for j, acc in enumerate(ACCUMULATIONS):
                sel = [
                    r
                    for r in records
                    if (r["v_format"], r["p_scale"], r["accumulation"]) == (vf, sp, acc)
                ]
                x = i * 4 + j
                for row, key in enumerate(("cond_err", "cond_vs_exact")):
                    ax = axes[row, col]
                    ys = [r[key] for r in sel if r[key] > 0]
                    ax.scatter([x] * len(ys), ys, color=colors[acc], zorder=3)
                    if ys:
                        ax.plot([x - 0.3, x + 0.3], [np.mean(ys)] * 2, color=colors[acc], lw=2)
                top = max(r["cond_bound"] for r in sel)
                axes[0, col].scatter([x], [top], marker="_", s=300, color="k")
                axes[1, col].scatter([x], [sel[0]["pv_gamma"]], marker="_", s=300, color="k")
        titles = (
            f"fa_fp8 error, sinks Delta={DELTA:g}, S={sp:g} (dots: seeds 0-2; black: bound)",
            f"the accumulator's part: |out - out(exact acc)| (black: pv_gamma), S={sp:g}",
        )
        labels = ("max |out - ref| / (w |v|)", "max |out - out_exact| / (w |v|)")
        for row in range(2):
            ax = axes[row, col]
            ax.set_xticks([j + 4 * i for i in range(2) for j in range(3)])
            ax.set_xticklabels(
                [f"{acc}\nV {vf}" for vf in ("bf16", "e4m3") for acc in ACCUMULATIONS],
                fontsize=8,
            )
            ax.set_yscale("log")
            ax.set_ylabel(labels[row])
            ax.set_title(titles[row], fontsize=9)
            ax.grid(True, which="both", axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    def go(quick: bool):
        if quick:
            return run([0], [1.0], n=1024, rows=4)
        return run([0, 1, 2], [1.0, 448.0])

    records, _ = experiment_main(
        argv,
        doc=__doc__ or "",
        name="fp8_accumulator",
        quick_help="one seed, S = 1, N = 1024, 4 rows",
        run=go,
        plot=plot,
    )
    print(table(records))


if __name__ == "__main__":
    main()
