"""Plots of a report: error distributions, error vs head dim / KV length / c, the error against
``sum p|v|``, block traces, Pareto.

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
>>> fig = plot_cond_distribution(recs)
>>> fig.get_supxlabel()
'|out - ref| / sum_k p_k |v_k|  (units of u_fp32 = 2^-24)'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from amla_numerics.analysis.grid import Record
from amla_numerics.analysis.metrics import COND_EDGES, HIST_EDGES, U_FP32, condition_aware
from amla_numerics.analysis.stats import mean_ci95, paired_ratio_ci95

__all__ = [
    "C_THEORY",
    "plot_block_trace",
    "plot_cond_distribution",
    "plot_error_scatter",
    "plot_error_vs",
    "plot_error_vs_c",
    "plot_pareto",
    "plot_ulp_distribution",
    "save_report_plots",
]

_ULP_LABEL = "|error| (FP32 ULPs at the reference)"
_COND_LABEL = "|out - ref| / sum_k p_k |v_k|  (units of u_fp32 = 2^-24)"

#: Compensation coefficients of note: name -> c (see ``docs/numerics.md`` and the README).
C_THEORY: dict[str, float] = {
    "2 ln 2 (mean-square optimum, uniform mantissas)": 2.0 * math.log(2.0),
    "1/ln 2 (zero bias)": 1.0 / math.log(2.0),
    "1.5 (CANN kernel)": 1.5,
}


#: Distinct colours for up to 18 variants: matplotlib's tab10, then Dark2 (a cycle of ten
#: would give two variants the same colour once FP8 and FA4 join the nine BF16 ones).
_PALETTE: tuple = (
    *(f"C{i}" for i in range(10)),
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#000000",
)


def _color(i: int) -> str:
    """The colour of the ``i``-th variant of a plot."""
    return _PALETTE[i % len(_PALETTE)]


def _variants(records: Sequence[Record]) -> list[str]:
    return list(dict.fromkeys(r.variant for r in records))


def plot_ulp_distribution(records: Sequence[Record], *, title: str = "") -> Figure:
    """Histogram and ECDF of the FP32 ULP errors per variant (all records pooled).

    Secondary: an error in ULPs of each element's own reference value explodes where the
    output nearly cancels (``|ref| << sum p|v|``), so its tail ranks kernels by their
    cancelling outputs; :func:`plot_cond_distribution` is the headline view. The records carry
    fixed power-of-two bins (:data:`~amla_numerics.analysis.metrics.HIST_EDGES`), so the ECDF
    is exact at every bin edge.
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
    fig.suptitle(
        title
        or "secondary view: error in FP32 ULPs at each reference value (explodes near zero outputs)"
    )
    return fig


def plot_cond_distribution(records: Sequence[Record], *, title: str = "") -> Figure:
    """ECDF of the condition-aware error per variant, one panel per (workload, head dim).

    Pooled over seeds and KV lengths from each record's fixed power-of-two histogram
    (:data:`~amla_numerics.analysis.metrics.COND_EDGES`, exact at every edge). A dashed
    vertical line of the variant's colour marks its largest bound on the same scale
    (``bound_cond_max``, worst over the pooled records); the headline error must stay left
    of it.
    """
    workloads = list(dict.fromkeys(r.workload for r in records))
    dims = sorted({r.head_dim for r in records})
    variants = _variants(records)
    fig = Figure(figsize=(3.6 * len(dims) + 1.5, 3.0 * len(workloads) + 0.8), layout="constrained")
    # every panel spans the same axes: tick labels on the outer panels only
    axes = np.atleast_2d(
        fig.subplots(len(workloads), len(dims), squeeze=False, sharex=True, sharey=True)
    )
    edges = np.asarray(COND_EDGES[1:-1])
    xs = np.concatenate([edges, [edges[-1] * 2]])
    for wi, w in enumerate(workloads):
        for di, d in enumerate(dims):
            ax = axes[wi, di]
            for vi, variant in enumerate(variants):
                sub = [
                    r
                    for r in records
                    if r.variant == variant and r.workload == w and r.head_dim == d
                ]
                counts = np.sum([r.metrics.hist_cond_err for r in sub], axis=0) if sub else None
                if counts is None or np.sum(counts) == 0:
                    continue
                col = _color(vi)
                frac = np.cumsum(counts) / np.sum(counts)
                ax.step(xs, frac, where="post", color=col, label=variant)
                bmax = max(r.bound_cond_max for r in sub)
                if np.isfinite(bmax) and bmax > 0:
                    ax.axvline(bmax, color=col, linestyle="--", linewidth=0.8, alpha=0.7)
            ax.set_xscale("log", base=2)
            ax.set_xlim(edges[0], xs[-1])
            ax.set_ylim(0, 1.02)
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{w}, d = {d}", fontsize="medium")
            if di == 0:
                ax.set_ylabel("fraction of elements <= x")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="grey", linestyle="--"))
        labels.append("a priori bound (max, same scale)")
        fig.legend(handles, labels, loc="outside right center", fontsize="small")
    fig.supxlabel(_COND_LABEL, fontsize="medium")
    fig.suptitle(
        title
        or "condition-aware error: ECDF per workload and head dim (pooled over seeds, KV lengths)"
    )
    return fig


def _mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the two half-widths of its 95 % t interval (0 with one value)."""
    m, (lo, hi) = mean_ci95(values)
    if math.isnan(lo):
        return m, 0.0, 0.0
    return m, m - lo, hi - m


def plot_error_vs(
    records: Sequence[Record], axis: str = "head_dim", *, workload: str | None = None
) -> Figure:
    """Condition-aware error and its bound vs ``axis`` ("head_dim" or "kv_len").

    Left: the max condition-aware error per variant (solid, mean over seeds with a 95 % t
    interval as error bars) and the largest a priori bound on the same scale (dashed, same
    colour, worst seed), both in u_fp32. Right: measured/bound, the max over covered
    elements of error/bound (worst seed; above 1 fails).
    """
    if axis not in ("head_dim", "kv_len"):
        raise ValueError(f"argument 'axis' must be 'head_dim' or 'kv_len', got {axis!r}")
    recs = [r for r in records if workload is None or r.workload == workload]
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_e, ax_r = fig.subplots(1, 2)
    for i, variant in enumerate(_variants(recs)):
        xs = sorted({getattr(r, axis) for r in recs if r.variant == variant})
        group = [[r for r in recs if r.variant == variant and getattr(r, axis) == x] for x in xs]
        col = _color(i)
        stats = [_mean_ci([r.metrics.cond_err_max for r in g]) for g in group]
        ax_e.errorbar(
            xs,
            [s[0] for s in stats],
            yerr=[[s[1] for s in stats], [s[2] for s in stats]],
            marker="o",
            color=col,
            capsize=3,
            label=variant,
        )
        ax_e.plot(
            xs,
            [max(r.bound_cond_max for r in g) for g in group],
            linestyle="--",
            color=col,
            alpha=0.6,
        )
        ax_r.plot(
            xs, [max(r.bound_ratio for r in g) for g in group], marker="o", color=col, label=variant
        )
    ax_r.axhline(1.0, color="k", linewidth=1.0, label="bound (fails above)")
    for ax in (ax_e, ax_r):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("head dim d" if axis == "head_dim" else "KV length N (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    ax_e.set_ylabel("max |out - ref| / sum p|v|  (u_fp32 = 2^-24)")
    ax_e.set_title(
        "max condition-aware error (solid, mean and 95 % CI over seeds);\n"
        "a priori bound, same scale (dashed, same colour)",
        fontsize="medium",
    )
    ax_r.set_ylabel("measured / bound (max over covered elements)")
    ax_r.set_title("how tight the bound is (must stay below 1)", fontsize="medium")
    ax_r.legend(fontsize="small", ncol=2)
    where = f", {workload} workload" if workload else ""
    fig.suptitle(f"error vs {'head dim' if axis == 'head_dim' else 'KV length'}{where}")
    return fig


def plot_error_vs_c(cs: Sequence[float], records: Sequence[Record]) -> Figure:
    """AMLA's error against the compensation coefficient ``c``, over seeds with intervals.

    ``records`` is a report's ``c_sweep``: per seed, ``amla`` at each c and ``amla_nocomp``
    and ``fa_fp32`` once. Left: relative Frobenius error as a ratio to ``fa_fp32`` paired by
    seed (geometric mean and 95 % t interval): the mean-square criterion. Right: the
    multiplicative bias ``scale_bias`` (least-squares scale of out against ref, minus 1, in
    u_fp32; mean and 95 % t interval over seeds): the zero-bias criterion (a mean signed
    error would cancel over V's random signs). ``amla_nocomp`` and ``fa_fp32`` are drawn as
    horizontal lines; vertical lines mark 2 ln 2, 1/ln 2 and the kernel's 1.5
    (:data:`C_THEORY`).
    """
    amla = [r for r in records if r.variant == "amla"]
    seeds = sorted({r.seed for r in amla})
    if not amla or len(amla) != len(cs) * len(seeds):
        raise ValueError("records do not match cs: pass a report's c_sweep")
    base = {r.seed: r for r in records if r.variant == "fa_fp32"}
    nocomp = {r.seed: r for r in records if r.variant == "amla_nocomp"}
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_f, ax_b = fig.subplots(1, 2)

    def ratio(recs: Sequence[Record]) -> tuple[float, float, float]:
        pairs = [(r, base[r.seed]) for r in recs if r.seed in base]
        m, (lo, hi) = paired_ratio_ci95(
            [a.metrics.rel_fro for a, _ in pairs], [b.metrics.rel_fro for _, b in pairs]
        )
        return m, (m - lo if np.isfinite(lo) else 0.0), (hi - m if np.isfinite(hi) else 0.0)

    per_c = [[r for r in amla if r.c == c] for c in cs]
    fr = [ratio(g) for g in per_c]
    bias = [_mean_ci([r.metrics.scale_bias for r in g]) for g in per_c]
    ax_f.errorbar(
        cs,
        [x[0] for x in fr],
        yerr=[[x[1] for x in fr], [x[2] for x in fr]],
        marker="o",
        capsize=3,
        label="amla",
    )
    ax_b.errorbar(
        cs,
        [x[0] for x in bias],
        yerr=[[x[1] for x in bias], [x[2] for x in bias]],
        marker="o",
        capsize=3,
        label="amla",
    )
    if nocomp:
        m, lo, hi = ratio(list(nocomp.values()))
        ax_f.axhline(
            m,
            color="C1",
            linestyle="--",
            label=f"amla_nocomp: {m:.3g} [{m - lo:.3g}, {m + hi:.3g}]",
        )
        bm, blo, bhi = _mean_ci([r.metrics.scale_bias for r in nocomp.values()])
        ax_b.axhline(
            bm,
            color="C1",
            linestyle="--",
            label=f"amla_nocomp: {bm:.3g} [{bm - blo:.3g}, {bm + bhi:.3g}]",
        )
    if base:
        bm, blo, bhi = _mean_ci([r.metrics.scale_bias for r in base.values()])
        ax_b.axhline(bm, color="C2", linestyle=":", label=f"fa_fp32: {bm:.3g}")
    ax_f.axhline(1.0, color="C2", linestyle=":", label="fa_fp32 (= 1)")
    ax_b.axhline(0.0, color="k", linewidth=0.5)
    styles = ("-.", ":", "-")
    for (name, c), ls in zip(C_THEORY.items(), styles, strict=True):
        for ax in (ax_f, ax_b):
            ax.axvline(c, color="grey", linestyle=ls, linewidth=0.9, label=f"c = {c:.3f}: {name}")
    ax_f.set_ylabel("rel. Frobenius error / fa_fp32's (paired by seed)")
    ax_f.set_title("mean-square criterion (geometric mean, 95 % CI)", fontsize="medium")
    ax_b.set_ylabel("<out, ref> / <ref, ref> - 1  (u_fp32): scale bias")
    ax_b.set_title("zero-bias criterion (mean, 95 % CI over seeds)", fontsize="medium")
    for ax in (ax_f, ax_b):
        ax.set_xlabel("compensation coefficient c")
        ax.grid(True, alpha=0.3)
    ax_f.legend(fontsize="x-small")
    ax_b.legend(fontsize="x-small")
    r0 = amla[0]
    fig.suptitle(
        f"AMLA error vs c ({r0.workload}, d={r0.head_dim}, N={r0.kv_len}, block {r0.block_n}, "
        f"{len(seeds)} seeds, policy {r0.policy})"
    )
    return fig


def plot_error_scatter(scatter: dict[str, Any], *, title: str = "") -> Figure:
    """Why max-ULP errors explode: per-element errors against the cancellation ratio.

    ``scatter`` is a report's ``scatter``: ``{variant: {"err", "ref", "mag"}}`` plus the
    ``"case"``. The x axis is ``|ref| / sum_k p_k |v_k|`` (1: no cancellation; small: the
    weighted sum of V nearly cancels). Left: the error relative to the element's own value,
    ``|out - ref| / |ref|`` in u_fp32 (what a ULP-at-reference error measures): it grows like
    ``1 / x`` (grey line: the median condition-aware error divided by x), so its maximum sits
    at the most cancelling output. Right: the condition-aware error ``|out - ref| / sum p|v|``
    of the same elements: one flat band, independent of x (grey: its median).
    """
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_r, ax_m = fig.subplots(1, 2)
    variants = [k for k in scatter if k != "case"]
    xs_all, cond_all = [], []
    for i, variant in enumerate(variants):
        d = scatter[variant]
        err = np.asarray(d["err"], dtype=np.float64)
        ref = np.asarray(d["ref"], dtype=np.float64)
        mag = np.asarray(d["mag"], dtype=np.float64)
        ok = np.isfinite(err) & (err > 0) & (ref > 0) & (mag > 0)
        x = ref[ok] / mag[ok]
        rel = err[ok] / ref[ok] / U_FP32
        cond = condition_aware(err[ok], mag[ok])
        kw = {"s": 2, "alpha": 0.35, "color": _color(i), "label": variant, "rasterized": True}
        ax_r.scatter(x, rel, **kw)
        ax_m.scatter(x, cond, **kw)
        xs_all.append(x)
        cond_all.append(cond)
    if xs_all and np.concatenate(xs_all).size:
        x = np.concatenate(xs_all)
        med = float(np.median(np.concatenate(cond_all)))
        grid = np.geomspace(float(np.min(x)), float(np.max(x)), 50)
        ax_r.plot(grid, med / grid, color="grey", linestyle="--", label=f"{med:.3g} / x")
        ax_m.axhline(med, color="grey", linestyle="--", label=f"median {med:.3g}")
    ax_r.set_ylabel("|out - ref| / |ref|  (u_fp32 = 2^-24): ~ ULPs at ref")
    ax_m.set_ylabel("|out - ref| / sum_k p_k |v_k|  (u_fp32 = 2^-24)")
    for ax in (ax_r, ax_m):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("|ref| / sum_k p_k |v_k|  (small: the output cancels)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", markerscale=4)
    ax_r.set_title("error relative to |ref|: explodes as the output cancels", fontsize="medium")
    ax_m.set_title("condition-aware error: one flat band", fontsize="medium")
    c = scatter.get("case", {})
    fig.suptitle(
        title
        or f"per-element errors, {c.get('workload')} workload (d={c.get('head_dim')}, "
        f"N={c.get('kv_len')}, block {c.get('block_n')}, seed {c.get('seed')})"
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


def plot_pareto(
    records: Sequence[Record], throughput: Sequence[dict[str, Any]], *, title: str = ""
) -> Figure:
    """Error against modelled TFLOPS with the model's interval as a bar, one marker a variant.

    The error is the median relative Frobenius error over the ``mla`` records (the workload
    the throughput is modelled on), or over every record when the grid has no ``mla``.
    """
    mla = [r for r in records if r.workload == "mla"]
    pool = mla or list(records)
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.subplots()
    markers = "osD^v<>pPX*h"
    lo_all, hi_all = [], []
    for i, t in enumerate(throughput):
        errs = [
            r.metrics.rel_fro
            for r in pool
            if r.variant == t["variant"] and np.isfinite(r.metrics.rel_fro)
        ]
        if not errs:
            continue
        x, y = t["tflops"], float(np.median(errs))
        rng = t.get("tflops_range") or (x, x)
        lo_all.append(rng[0])
        hi_all.append(rng[1])
        ax.errorbar(
            [x],
            [y],
            xerr=[[x - rng[0]], [rng[1] - x]],
            color=_color(i),
            marker=markers[i % len(markers)],
            markersize=7,
            capsize=4,
            linestyle="none",
            label=t["variant"],
        )
    if lo_all:
        # never magnify differences smaller than the uncertainty: the axis spans at least
        # three times the widest interval, and at least 10 % of the throughput
        width = max(max(h - lo for lo, h in zip(lo_all, hi_all, strict=True)), 0.0)
        span = max(3 * width, 0.1 * max(hi_all), max(hi_all) - min(lo_all))
        mid = 0.5 * (min(lo_all) + max(hi_all))
        ax.set_xlim(mid - 0.6 * span, mid + 0.6 * span)
    ax.set_yscale("log")
    bounded = any(t.get("tflops_range") for t in throughput)
    ax.set_xlabel(
        "modelled throughput, MLA decode on Ascend 910C (TFLOPS; "
        + ("bars: bounds over the parameter box)" if bounded else "nominal model)")
    )
    ax.set_ylabel(f"median relative Frobenius error ({'mla' if mla else 'all'} workload)")
    ax.set_title(title or "accuracy vs throughput (lower right is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="best", ncol=2)
    return fig


def save_report_plots(report: Any, out_dir: str | Path) -> list[Path]:
    """Every plot of a report as PNG files in ``out_dir``; returns the paths.

    Draws only: the compensation sweep, the traced case and the scatter case were measured
    by :func:`~amla_numerics.analysis.report.build_report` (``report.c_sweep``,
    ``report.trace``, ``report.scatter``). Every plot draws the report's own records
    (its head dims, KV lengths, workloads, seeds, policy).
    """
    out_dir = Path(out_dir)
    records = list(report.records)
    config = report.header["config"]
    policy = report.header.get("policy", "ascend")
    seeds = report.header.get("seeds", [])
    figs: dict[str, Figure] = {}
    if records:
        figs["cond_error_distribution.png"] = plot_cond_distribution(
            records,
            title=f"condition-aware error ECDF per workload and head dim (policy {policy}, "
            f"seeds {_span(seeds)}, N {_span(sorted({r.kv_len for r in records}))})",
        )
        figs["ulp_distribution.png"] = plot_ulp_distribution(records)
    for w in dict.fromkeys(r.workload for r in records):
        sub = [r for r in records if r.workload == w]
        if len({r.head_dim for r in sub}) > 1:
            figs[f"error_vs_head_dim_{w}.png"] = plot_error_vs(sub, "head_dim", workload=w)
        if len({r.kv_len for r in sub}) > 1:
            figs[f"error_vs_kv_len_{w}.png"] = plot_error_vs(sub, "kv_len", workload=w)
    if report.throughput:
        figs["pareto.png"] = plot_pareto(
            records,
            report.throughput,
            title=f"accuracy vs throughput (lower right is better; policy {policy}, "
            f"seeds {_span(seeds)})",
        )
    if report.c_sweep:
        figs["error_vs_c.png"] = plot_error_vs_c(config["c_sweep"], report.c_sweep)
    if report.trace is not None:
        t = config["trace_case"]
        figs["block_trace.png"] = plot_block_trace(
            report.trace,
            rows=(0, 1),
            title=f"AMLA per-block trace, {t['workload']} workload "
            f"(d={t['head_dim']}, N={t['kv_len']}, block {t['block_n']}, policy {policy})",
        )
    if getattr(report, "scatter", None):
        figs["error_scatter.png"] = plot_error_scatter(report.scatter)
    paths = []
    for name, fig in figs.items():
        path = out_dir / name
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _span(values: Sequence[int]) -> str:
    v = list(values)
    if not v:
        return "-"
    if len(v) > 3 and v == list(range(v[0], v[0] + len(v))):
        return f"{v[0]}-{v[-1]}"
    return ",".join(str(x) for x in v)
