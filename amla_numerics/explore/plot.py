"""The explorer's picture: error against modelled throughput per chip, and the P cast's
saturation regions.

One panel per chip: each point at its modelled TFLOPS (horizontal bar: the interval over
the unsourced hardware ranges) and its measured error (vertical bar: the Student t
interval over the seeds), coloured by variant; points with a hazard (closed-form
saturation or FP32 overflow, or anything counted) are drawn as red crosses over a red
shaded band, and the hazard-free Pareto front (higher TFLOPS, lower error) is a line. The
last panel is the (tau, static scale) plane in log2 units: the region where the P cast
saturates is shaded for each FP8 format (``tau + log2 S > log2 threshold``, AMLA's fold
lowers it by ``log2 1.4140625``), with the grid's stale-max FP8-P points on it.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from amla_numerics.explore import Grid, Measure, explore
>>> r = explore(Grid(variants=("fa_fp32",)), Measure(workloads=("mla",), seeds=1, rows=2,
...             kv_len=128))
>>> fig = pareto_figure(r)
>>> len(fig.axes)
2
"""

from __future__ import annotations

import math
from typing import Any

from amla_numerics.explore.limits import overflow_threshold
from amla_numerics.explore.run import ExploreResult, PointResult

__all__ = ["pareto_figure", "pareto_front"]

_FP8 = ("e4m3", "e5m2")


def pareto_front(points: list[PointResult]) -> list[PointResult]:
    """The points no other point beats on both throughput (higher) and error (lower),
    among those with a throughput and a finite error, sorted by throughput.

    Examples
    --------
    >>> pareto_front([])
    []
    """
    pts = [p for p in points if p.tflops is not None and math.isfinite(p.error.mean)]
    pts.sort(key=lambda p: (-p.tflops, p.error.mean))  # type: ignore[operator]
    front: list[PointResult] = []
    best = math.inf
    for p in pts:
        if p.error.mean < best:
            front.append(p)
            best = p.error.mean
    return sorted(front, key=lambda p: p.tflops)  # type: ignore[arg-type,return-value]


def pareto_figure(result: ExploreResult) -> Any:
    """The figure described in the module docstring (a matplotlib Figure)."""
    import matplotlib.pyplot as plt

    chips = list(dict.fromkeys(p.point.hardware for p in result.points))
    n = len(chips) + 1
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.4), squeeze=False)
    variants = list(dict.fromkeys(p.point.variant for p in result.points))
    cmap = plt.get_cmap("tab10")
    colour = {v: cmap(i % 10) for i, v in enumerate(variants)}
    for ax, chip in zip(axes[0], chips, strict=False):
        pts = [p for p in result.points if p.point.hardware == chip]
        bad = [p for p in pts if not p.hazard_free and p.tflops is not None]
        if bad:
            errs = [p.error.mean for p in bad if math.isfinite(p.error.mean)]
            if errs:
                ax.axhspan(min(errs) / 1.5, max(errs) * 1.5, color="red", alpha=0.08, lw=0)
        for p in pts:
            if p.tflops is None or not math.isfinite(p.error.mean):
                continue
            xerr = [[p.tflops - (p.tflops_lo or p.tflops)], [(p.tflops_hi or p.tflops) - p.tflops]]
            yerr = [[p.error.mean - p.error.lo], [p.error.hi - p.error.mean]]
            ax.errorbar(
                p.tflops,
                p.error.mean,
                xerr=xerr,
                yerr=yerr,
                fmt="x" if not p.hazard_free else "o",
                ms=8 if not p.hazard_free else 5,
                color="red" if not p.hazard_free else colour[p.point.variant],
                mfc="none" if p.point.p_cast != "bf16" else None,
                elinewidth=0.7,
                capsize=2,
            )
        front = pareto_front([p for p in pts if p.hazard_free])
        if front:
            ax.plot([p.tflops for p in front], [p.error.mean for p in front], "k--", lw=0.8)
        ax.set_yscale("log")
        bounded = any(p.tflops_hi is not None and p.tflops_hi != p.tflops for p in pts)
        ax.set_xlabel(
            "modelled TFLOPS ("
            + ("bars: bounds over the parameter box)" if bounded else "nominal model)")
        )
        ax.set_ylabel("max error / sum p|v| (geo. mean, 95% t)")
        ax.set_title(chip)
        ax.grid(True, which="both", alpha=0.3)
    for v in variants:
        axes[0][0].plot([], [], "o", color=colour[v], label=v)
    axes[0][0].plot([], [], "o", mfc="none", color="grey", label="FP8 P (open)")
    axes[0][0].plot([], [], "x", color="red", label="hazard")
    axes[0][0].plot([], [], "k--", label="hazard-free front")
    axes[0][0].legend(fontsize=7, loc="best")
    _limits_panel(axes[0][-1], result)
    fig.tight_layout()
    return fig


def _limits_panel(ax: Any, result: ExploreResult) -> None:
    """The (tau in log2 units, log2 S) plane with each FP8 format's saturating region."""
    pts = [p for p in result.points if p.point.tau is not None and p.point.p_cast in _FP8]
    taus = [
        float(p.point.tau or 0.0) * (1 / math.log(2) if p.point.tau_units == "ln" else 1.0)
        for p in pts
    ]
    scales = [math.log2(p.point.p_scale) for p in pts]
    x_hi = max([12.0, *[t + 1 for t in taus]])
    y_hi = max([18.0, *[s + 1 for s in scales]])
    shades = {"e4m3": ("tab:red", 0.18), "e5m2": ("tab:orange", 0.12)}
    for fmt in _FP8:
        t, _ = overflow_threshold(fmt, "rne")
        edge = math.log2(t)
        colour, alpha = shades[fmt]
        xs = [0.0, x_hi]
        ax.fill_between(
            xs,
            [edge - x for x in xs],
            [y_hi, y_hi],
            color=colour,
            alpha=alpha,
            lw=0,
            label=f"{fmt} saturates (tau + log2 S > {edge:.2f})",
        )
        ax.plot(xs, [edge - x for x in xs], color=colour, lw=1)
    labels: dict[tuple[float, float], list[str]] = {}
    for p, t, s in zip(pts, taus, scales, strict=True):
        marker = "x" if p.saturations else "o"
        ax.plot(t, s, marker, color="red" if p.saturations else "black", mfc="none", ms=7)
        text = f"{p.point.variant} {p.point.p_cast}"
        at = labels.setdefault((round(t, 3), round(s, 3)), [])
        if text not in at:
            at.append(text)
    for (t, s), texts in labels.items():
        rank = sorted(x for x, y in labels if y == s).index(t)  # alternate along a row
        ax.annotate(
            "\n".join(texts),
            (t, s),
            fontsize=6,
            xytext=(4, 4 if rank % 2 == 0 else -12),
            textcoords="offset points",
        )
    ax.set_xlim(0, x_hi)
    ax.set_ylim(-1, y_hi)
    ax.set_xlabel("tau (log2 units; skip_scale's nats / ln 2)")
    ax.set_ylabel("log2 static P scale S")
    ax.set_title("P cast saturation (x: saturated in the emulator)")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(True, alpha=0.3)
