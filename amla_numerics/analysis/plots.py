"""Plots of a report: ULP distributions, error vs head dim / KV length / c, block traces, Pareto.

Every function returns a :class:`matplotlib.figure.Figure` built with the object API (no
pyplot state, no display needed), so notebooks show it and scripts save it.

Examples
--------
>>> from amla_numerics.analysis.grid import expand_grid, run_grid
>>> recs = run_grid(expand_grid(head_dims=[64], kv_lens=[256], workloads=["random"], rows=2,
...                             block_n=128), ["fa_fp32", "amla"])
>>> fig = plot_ulp_distribution(recs)
>>> [ax.get_xlabel() for ax in fig.axes]
['|error| (FP32 ULPs at the reference)', '|error| (FP32 ULPs at the reference)']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from amla_numerics.analysis.grid import Record
from amla_numerics.analysis.metrics import HIST_EDGES

__all__ = [
    "plot_block_trace",
    "plot_error_vs",
    "plot_error_vs_c",
    "plot_pareto",
    "plot_ulp_distribution",
    "save_report_plots",
]

_ULP_LABEL = "|error| (FP32 ULPs at the reference)"


def _variants(records: Sequence[Record]) -> list[str]:
    return list(dict.fromkeys(r.variant for r in records))


def plot_ulp_distribution(records: Sequence[Record], *, title: str = "") -> Figure:
    """Histogram and ECDF of the FP32 ULP errors per variant (all records pooled).

    The records carry fixed power-of-two bins (:data:`~amla_numerics.analysis.metrics.HIST_EDGES`),
    so the ECDF is exact at every bin edge.
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_h, ax_c = fig.subplots(1, 2)
    edges = np.asarray(HIST_EDGES[1:-1])  # the finite, positive edges 2**-8 .. 2**24
    for variant in _variants(records):
        counts = np.sum([r.metrics.hist_ulp_fp32 for r in records if r.variant == variant], axis=0)
        if counts.sum() == 0:
            continue
        frac = counts / counts.sum()
        # bin 0 is [0, 2**-8): drawn at 2**-9; the last bin [2**24, inf) at 2**25
        centers = np.concatenate([[2.0**-9], np.sqrt(edges[:-1] * edges[1:]), [2.0**25]])
        ax_h.plot(centers, frac, marker=".", label=variant)
        ax_c.step(np.concatenate([edges, [2.0**25]]), np.cumsum(frac), where="post", label=variant)
    for ax in (ax_h, ax_c):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(_ULP_LABEL)
        ax.grid(True, alpha=0.3)
    ax_h.set_ylabel("fraction of elements per power-of-two bin")
    ax_c.set_ylabel("fraction of elements with error <= x (ECDF)")
    ax_h.set_title("ULP error histogram")
    ax_c.set_title("ULP error ECDF")
    ax_c.legend(fontsize="small", loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def plot_error_vs(
    records: Sequence[Record], axis: str = "head_dim", *, workload: str | None = None
) -> Figure:
    """Error and its a priori bound vs ``axis`` ("head_dim" or "kv_len"), one line per variant.

    Left: the median FP32 ULP error (solid) and the deterministic bound at the median element
    (dashed, same colour). Right: measured/bound, the max over elements of error/bound
    (above 1 would be a bug or a wrong model). Values are the worst over seeds and the
    other axis. (The max ULP error is not drawn against the bound: it sits at outputs that
    nearly cancel, where one FP32 ULP is tiny and both numbers are huge.)
    """
    if axis not in ("head_dim", "kv_len"):
        raise ValueError(f"argument 'axis' must be 'head_dim' or 'kv_len', got {axis!r}")
    recs = [r for r in records if workload is None or r.workload == workload]
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_e, ax_r = fig.subplots(1, 2)
    for i, variant in enumerate(_variants(recs)):
        xs = sorted({getattr(r, axis) for r in recs if r.variant == variant})
        group = [[r for r in recs if r.variant == variant and getattr(r, axis) == x] for x in xs]
        col = f"C{i % 10}"
        ax_e.plot(
            xs,
            [max(r.metrics.median_ulp_fp32 for r in g) for g in group],
            marker="o",
            color=col,
            label=variant,
        )
        ax_e.plot(
            xs,
            [max(r.bound_ulp_fp32 for r in g) for g in group],
            linestyle="--",
            color=col,
            alpha=0.6,
        )
        ax_r.plot(
            xs, [max(r.bound_ratio for r in g) for g in group], marker="o", color=col, label=variant
        )
    ax_r.axhline(1.0, color="k", linewidth=1.0)
    for ax in (ax_e, ax_r):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("head dim d" if axis == "head_dim" else "KV length N (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    ax_e.set_ylabel("median |error| (FP32 ULPs at the reference)")
    ax_e.set_title("median error (solid), a priori bound (dashed)", fontsize="medium")
    ax_r.set_ylabel("measured / bound (max over elements)")
    ax_r.set_title("how tight the bound is (must stay below 1)", fontsize="medium")
    ax_r.legend(fontsize="small", ncol=2)
    where = f", {workload} workload" if workload else ""
    fig.suptitle(f"error vs {'head dim' if axis == 'head_dim' else 'KV length'}{where}")
    return fig


def plot_error_vs_c(cs: Sequence[float], records: Sequence[Record]) -> Figure:
    """Relative Frobenius error and mean signed ULP error of ``amla`` against ``c``.

    ``records`` is a report's ``c_sweep`` (its ``amla`` records in ``cs`` order, then the
    ``amla_nocomp`` and ``fa_fp32`` references drawn as horizontal lines).
    """
    amla = [r for r in records if r.variant == "amla"]
    if len(amla) != len(cs):
        raise ValueError("records do not match cs: pass a report's c_sweep")
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_f, ax_b = fig.subplots(1, 2)
    ax_f.plot(cs, [r.metrics.rel_fro for r in amla], marker="o", label="amla")
    ax_b.plot(cs, [r.metrics.mean_signed_ulp_fp32 for r in amla], marker="o", label="amla")
    for i, r in enumerate(x for x in records if x.variant != "amla"):
        ax_f.axhline(r.metrics.rel_fro, color=f"C{i + 1}", linestyle="--", label=r.variant)
        ax_b.axhline(
            r.metrics.mean_signed_ulp_fp32, color=f"C{i + 1}", linestyle="--", label=r.variant
        )
    ax_f.set_yscale("log")
    ax_f.set_ylabel("relative Frobenius error")
    ax_b.set_ylabel("mean signed error (FP32 ULPs): bias")
    ax_b.axhline(0.0, color="k", linewidth=0.5)
    for ax in (ax_f, ax_b):
        ax.set_xlabel("compensation coefficient c")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    r0 = amla[0]
    fig.suptitle(
        f"AMLA error vs c ({r0.workload}, d={r0.head_dim}, N={r0.kv_len}, block {r0.block_n})"
    )
    return fig


def plot_block_trace(trace: Any, *, rows: Sequence[int] = (0,), title: str = "") -> Figure:
    """Per-block ``m_j``, ``n_j`` and ``eps_j`` of the emulator's trace for some rows."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    fields = (
        ("m", "running row max m_j (nats)"),
        ("n", "n_j = rna(-m_j log2 e)"),
        ("eps", "compensation eps_j (exponent units)"),
    )
    for ax, (name, label) in zip(axes, fields, strict=True):
        data = np.asarray(getattr(trace, name), dtype=np.float64)
        data = data.reshape(data.shape[0], -1)
        for r in rows:
            ax.plot(np.arange(data.shape[0]), data[:, r], marker=".", label=f"row {r}")
        ax.set_xlabel("KV block j")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_pareto(records: Sequence[Record], throughput: Sequence[dict[str, Any]]) -> Figure:
    """Error against modelled TFLOPS, one marker a variant (legend, no overlapping labels).

    The error is the median relative Frobenius error over the ``mla`` records (the workload
    the throughput is modelled on), or over every record when the grid has no ``mla``.
    """
    mla = [r for r in records if r.workload == "mla"]
    pool = mla or list(records)
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.subplots()
    markers = "osD^v<>pPX*h"
    for i, t in enumerate(throughput):
        errs = [
            r.metrics.rel_fro
            for r in pool
            if r.variant == t["variant"] and np.isfinite(r.metrics.rel_fro)
        ]
        if errs:
            ax.scatter(
                [t["tflops"]],
                [float(np.median(errs))],
                color=f"C{i % 10}",
                marker=markers[i % len(markers)],
                s=55,
                label=t["variant"],
            )
    ax.set_yscale("log")
    ax.set_xlabel("modelled throughput, MLA decode on Ascend 910C (TFLOPS)")
    ax.set_ylabel(f"median relative Frobenius error ({'mla' if mla else 'all'} workload)")
    ax.set_title("accuracy vs throughput (lower right is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def save_report_plots(report: Any, out_dir: str | Path) -> list[Path]:
    """Every plot of a report as PNG files in ``out_dir``; returns the paths.

    Draws only: the compensation sweep and the traced case were measured by
    :func:`~amla_numerics.analysis.report.build_report` (``report.c_sweep``, ``report.trace``).
    """
    out_dir = Path(out_dir)
    records = list(report.records)
    figs: dict[str, Figure] = {"ulp_distribution.png": plot_ulp_distribution(records)}
    for w in dict.fromkeys(r.workload for r in records):
        sub = [r for r in records if r.workload == w]
        if len({r.head_dim for r in sub}) > 1:
            figs[f"error_vs_head_dim_{w}.png"] = plot_error_vs(sub, "head_dim", workload=w)
        if len({r.kv_len for r in sub}) > 1:
            figs[f"error_vs_kv_len_{w}.png"] = plot_error_vs(sub, "kv_len", workload=w)
    if report.throughput:
        figs["pareto.png"] = plot_pareto(records, report.throughput)
    config = report.header["config"]
    if report.c_sweep:
        figs["error_vs_c.png"] = plot_error_vs_c(config["c_sweep"], report.c_sweep)
    if report.trace is not None:
        t = config["trace_case"]
        figs["block_trace.png"] = plot_block_trace(
            report.trace,
            rows=(0, 1),
            title=f"AMLA per-block trace, {t['workload']} workload "
            f"(d={t['head_dim']}, N={t['kv_len']}, block {t['block_n']})",
        )
    paths = []
    for name, fig in figs.items():
        path = out_dir / name
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths
