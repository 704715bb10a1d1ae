"""Experiment: FlashMLA's FP8 KV cache, its quantisation error apart from the kernel's.

Workload: ``mla`` (DeepSeek-V3 absorbed decode: d = 576, V = K[:, :512], scale
1/sqrt(192)), 16 rows, N = 4096 keys, block 512, seeds 0-2. For each variant in
{fa_fp32, amla, fa_fp8, amla_fp8} and each cache (BF16; FP8 = FlashMLA's 656-byte layout,
:mod:`amla_numerics.flash.fp8kv`):

- ``quant``: the certified reference on the dequantised cache minus the one on the BF16
  cache (the cache's own error, the same for every variant);
- ``kernel``: the emulated variant on the cache's values minus the certified reference on
  the same values (the kernel's error);

both as ``max_ij |e_ij| / sum_k w_ik |v_kj|``
(:func:`~amla_numerics.analysis.metrics.magnitude_scale` of the BF16 cache) and as
``||e||_F / ||ref||_F``; ``bound_ratio`` is the kernel error over its a priori bound
evaluated on the cache's values. Bytes per token: 1152 (BF16) vs 656 (FP8).

Writes ``fp8_kv.csv`` and ``fp8_kv.png`` into ``--out`` (default ``docs/figures``).
Run: ``PYTHONPATH=. .venv/bin/python experiments/fp8_kv.py [--quick]``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _results import experiment_main  # experiments/_results.py (the script's folder)

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound
from amla_numerics.analysis.metrics import magnitude_scale
from amla_numerics.analysis.workloads import make_workload
from amla_numerics.flash.fp8kv import BYTES_PER_TOKEN, kv_fp8_roundtrip

VARIANTS = ("fa_fp32", "amla", "fa_fp8", "amla_fp8")


def run(seeds, *, n=4096, rows=16, block=512):
    records = []
    for seed in seeds:
        w = make_workload("mla", head_dim=576, kv_len=n, rows=rows, seed=seed)
        mag = magnitude_scale(w.q, w.k, w.v, w.scale)
        ref = np.asarray(reference.attention(w.q, w.k, w.v, w.scale, method="auto"))
        for cache in ("bf16", "fp8"):
            kv = w.k if cache == "bf16" else kv_fp8_roundtrip(w.k)
            ref_c = (
                ref
                if cache == "bf16"
                else np.asarray(reference.attention(w.q, kv, kv[:, :512], w.scale, method="auto"))
            )
            quant = ref_c - ref
            for variant in VARIANTS:
                out = flash.attention(w.q, kv, kv[:, :512], variant, scale=w.scale, block_n=block)
                kern = np.asarray(out.out, np.float64) - ref_c
                b = a_priori_bound(variant, head_dim=576, kv_len=n, block_n=block)
                det = elementwise_bound(b, w.q, kv, kv[:, :512], w.scale)
                records.append(
                    {
                        "variant": variant,
                        "cache": cache,
                        "seed": seed,
                        "bytes_per_token": 2 * 576 if cache == "bf16" else BYTES_PER_TOKEN,
                        "quant_cond": float(np.max(np.abs(quant) / mag)),
                        "kernel_cond": float(np.max(np.abs(kern) / mag)),
                        "quant_rel_fro": float(np.linalg.norm(quant) / np.linalg.norm(ref)),
                        "kernel_rel_fro": float(np.linalg.norm(kern) / np.linalg.norm(ref)),
                        "bound_ratio": float(np.max(np.abs(kern) / det)),
                    }
                )
    return records


def plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.6))
    x = np.arange(len(VARIANTS))
    width = 0.27
    for i, (cache, part, col) in enumerate(
        (("bf16", "kernel", "tab:blue"), ("fp8", "kernel", "tab:orange"), ("fp8", "quant", "k"))
    ):
        med, lo, hi = [], [], []
        for v in VARIANTS:
            vals = [r[f"{part}_cond"] for r in records if r["variant"] == v and r["cache"] == cache]
            med.append(np.median(vals))
            lo.append(min(vals))
            hi.append(max(vals))
        ax.bar(
            x + (i - 1) * width,
            med,
            width,
            color=col,
            yerr=[np.subtract(med, lo), np.subtract(hi, med)],
            capsize=3,
            label=f"{part} error, {cache} cache" if part == "kernel" else "FP8 cache quantisation",
        )
    ax.set_xticks(x, VARIANTS)
    ax.set(
        yscale="log",
        ylabel="max |e| / sum_k w|v|",
        title="MLA decode (d 576, N 4096): FP8 KV cache error vs kernel error (3 seeds)",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    records, _ = experiment_main(
        argv,
        doc=__doc__ or "",
        name="fp8_kv",
        quick_help="1 seed, N = 1024, 4 rows",
        run=lambda quick: run([0], n=1024, rows=4) if quick else run([0, 1, 2]),
        plot=plot,
    )
    print("variant   cache seed quant_cond kernel_cond quant_rel kernel_rel bound_ratio")
    for r in records:
        print(
            f"{r['variant']:9s} {r['cache']:5s} {r['seed']:4d} {r['quant_cond']:10.2e} "
            f"{r['kernel_cond']:11.2e} {r['quant_rel_fro']:9.2e} {r['kernel_rel_fro']:10.2e} "
            f"{r['bound_ratio']:11.2e}"
        )


if __name__ == "__main__":
    main()
