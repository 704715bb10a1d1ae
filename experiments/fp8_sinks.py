"""Experiment: FP8 (E4M3 and E5M2) P V under attention sinks, swept over the P cast format,
the sink strength Delta, the static P scale S and the KV order; underflow counted and error
measured against the certified reference.

Workload: :func:`amla_numerics.analysis.sinks.sink_workload` (4 sink keys at the start,
``Delta`` nats above ``N(0, 1)`` logits), d = 64, N = 4096 keys, 16 rows, block 512 (the
sinks sit in block 0), BF16 inputs, seeds 0-2, Delta = 0, 2, ..., 16. Variants ``fa_fp8``
and ``amla_fp8`` (rne, satfinite) under both orders and the static scales of
:data:`SCALES`, with ``fa_fp32`` (BF16 P) as the baseline:

- E4M3 (max 448, smallest subnormal ``2**-9``): ``S`` in {1, 256, 448}; 448 is
  SageAttention2's "range filled" scale (``max|P| / 448``, arXiv:2411.10958).
- E5M2 (max 57344, smallest subnormal ``2**-16``): ``S`` in {1, 256, 32768}. ``S = 1`` is
  the unscaled cast; ``S = 256`` is E4M3's power-of-two scale, so the two formats compare
  at equal ``S``; ``S = 2**15 = 32768`` is the largest power of two that no tile reaches
  saturation with: ``fa_fp8``'s P is at most 1 and ``amla_fp8``'s ``A = P r^`` at most about
  1.42, and ``1.42 * 2**15 < 57344``, while at ``2**16`` even ``fa_fp8``'s ``P = 1``
  saturates (E5M2's range-filled ``S = 57344`` is not a power of two and saturates AMLA's
  tile, as 448 does in E4M3, so the sweep leaves it out).

For each run (``p_cast``: the format of the P cast the variant ran with, ``"bf16"`` for
the baseline):

- ``underflow_frac``: trace ``p_underflow`` summed over blocks and rows, divided by the
  ordinary (non-sink) keys ``rows * (N - 4)``;
- ``pred_threshold``: the same fraction predicted from float64 scores alone: key ``i`` is
  lost iff ``exp(s_i - m_j) S <= T``, ``T`` = :func:`lost_threshold` (half the cast
  format's smallest subnormal: rne rounds below it, and the tie, to 0; ``2**-10`` in E4M3,
  ``2**-17`` in E5M2), ``m_j`` the running max after key ``i``'s block in the visit order
  (no emulation involved);
- ``pred_lau``: Lau (2026, arXiv:2606.06521)'s leading-order closed form for the forward
  order, ``Phi((Delta + delta_k - ln(1/T) - ln S) / sigma)`` with ``delta_k`` the measured
  mean excess of the sink block's max over Delta and ``sigma**2 = (d - 1)/d`` the ordinary
  score variance of this workload. Their constant ``6.93 = 10 ln 2`` is ``ln(1/T)`` for
  E4M3; the derivation (an ordinary score ``N(0, sigma**2)`` is lost iff it lies
  ``ln(1/T) + ln S`` below the running max, the max being the sink block's,
  ``Delta + delta_k``) uses nothing of the format but ``T``, so E5M2 gets
  ``ln(1/T) = 17 ln 2 = 11.78`` by the same derivation (our generalisation, not theirs);
- ``cond_err``: ``max_ij |out - ref| / sum_k w_ik |v_kj|`` (dimensionless; the denominator
  is :func:`~amla_numerics.analysis.metrics.magnitude_scale`, ``ref`` the certified
  reference); ``bound_ratio``: ``max err / bound``
  of :func:`~amla_numerics.analysis.bounds.a_priori_bound` (must be <= 1); ``rel_fro``:
  ``||out - ref||_F / ||ref||_F`` (the root-mean-square view of the published MSEs);
- ``lost_mass``: the reference softmax weight of the keys the threshold model says are
  lost (the first-order output error is that mass times the spread of V).

Writes ``fp8_sinks.csv`` and ``fp8_sinks.png`` (one row of panels per FP8 format) into
``--out`` (default ``docs/figures``) and prints, per variant and format, the largest
``bound_ratio`` and how many runs the threshold model predicts exactly. Run:
``PYTHONPATH=. .venv/bin/python experiments/fp8_sinks.py [--quick] [--out DIR]``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _results import experiment_main  # experiments/_results.py (the script's folder)

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound, softmax_weights
from amla_numerics.analysis.metrics import magnitude_scale
from amla_numerics.analysis.sinks import DEFAULT_SINKS, sink_workload
from amla_numerics.flash.fp8 import FP8_FORMATS, variant_policy
from amla_numerics.flash.policy import get_policy
from amla_numerics.formats import get_format

#: P cast format -> the static scales S swept with it (see the module docstring).
SCALES: dict[str, tuple[float, ...]] = {
    "e4m3": (1.0, 256.0, 448.0),
    "e5m2": (1.0, 256.0, 32768.0),
}
#: The --quick grid's scales (S = 1 and one power of two per format).
QUICK_SCALES: dict[str, tuple[float, ...]] = {"e4m3": (1.0, 256.0), "e5m2": (1.0, 32768.0)}


def lost_threshold(p_cast: str) -> float:
    """``T``: a positive value ``X' <= T`` casts to 0 under rne (half the smallest subnormal).

    Examples
    --------
    >>> lost_threshold("e4m3") == 2.0**-10, lost_threshold("e5m2") == 2.0**-17
    (True, True)
    """
    return get_format(p_cast).min_subnormal / 2


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def threshold_model(
    s: np.ndarray, block: int, order: str, p_scale: float, p_cast: str
) -> np.ndarray:
    """Per row: which keys the ``p_cast`` cast loses, from float64 scores (M, N) alone."""
    n = s.shape[-1]
    thr = lost_threshold(p_cast)
    starts = list(range(0, n, block))
    if order == "reverse":
        starts = starts[::-1]
    lost = np.zeros(s.shape, bool)
    m = np.full(s.shape[:-1], -np.inf)
    for lo in starts:
        blk = s[..., lo : lo + block]
        m = np.maximum(m, blk.max(axis=-1))
        lost[..., lo : lo + block] = np.exp(blk - m[..., None]) * p_scale <= thr
    return lost


def run(
    deltas: Sequence[float],
    scales: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    *,
    d: int = 64,
    n: int = 4096,
    rows: int = 16,
    block: int = 512,
) -> list[dict[str, Any]]:
    """One record per (Delta, seed, run): the baseline, then each FP8 variant, format, S, order."""
    records = []
    ordinary = rows * (n - DEFAULT_SINKS)
    sigma = math.sqrt((d - 1) / d)
    runs: list[tuple[str, str | None, float, str]] = [("fa_fp32", None, 1.0, "forward")]
    runs += [
        (var, fmt, sp, order)
        for fmt in scales
        for var in ("fa_fp8", "amla_fp8")
        for sp in scales[fmt]
        for order in ("forward", "reverse")
    ]
    for delta in deltas:
        for seed in seeds:
            w = sink_workload(delta, head_dim=d, kv_len=n, rows=rows, seed=seed)
            ref = reference.attention(w.q, w.k, w.v, w.scale, method="auto")
            s, wt = softmax_weights(w.q, w.k, w.scale)
            mag = magnitude_scale(w.q, w.k, w.v, w.scale)
            delta_k = float(np.mean(s[:, :block].max(axis=-1) - delta))
            for variant, fmt, sp, order in runs:
                pol = get_policy("ascend").replace(p_scale=sp, kv_order=order)
                if fmt is not None:
                    pol = pol.replace(p_cast=fmt, p_cast_rounding="rne")
                p_cast = variant_policy(pol, variant).p_cast
                assert p_cast == (fmt or "bf16"), (variant, p_cast)
                res = flash.attention(
                    w.q, w.k, w.v, variant, scale=w.scale, block_n=block, policy=pol, trace=True
                )
                tr = res.trace
                assert tr is not None and tr.p_underflow is not None and tr.p_saturate is not None
                err = np.abs(np.asarray(res.out, np.float64) - ref)
                bnd = elementwise_bound(
                    a_priori_bound(variant, head_dim=d, kv_len=n, block_n=block, policy=pol),
                    w.q,
                    w.k,
                    w.v,
                    w.scale,
                )
                fp8 = fmt is not None
                if fmt is not None:
                    lost = threshold_model(s, block, order, sp, fmt)
                    nats = -math.log(lost_threshold(fmt))  # 10 ln 2 (E4M3), 17 ln 2 (E5M2)
                    lau = _phi((delta + delta_k - nats - math.log(sp)) / sigma)
                else:
                    lost = np.zeros(s.shape, bool)
                records.append(
                    {
                        "variant": variant,
                        "p_cast": p_cast,
                        "delta": delta,
                        "p_scale": sp,
                        "order": order,
                        "seed": seed,
                        "underflow_frac": float(tr.p_underflow.sum()) / ordinary,
                        "saturated": int(tr.p_saturate.sum()),
                        "pred_threshold": float(lost[:, DEFAULT_SINKS:].sum()) / ordinary,
                        "pred_lau": lau if fp8 and order == "forward" else float("nan"),
                        "delta_k": delta_k,
                        "lost_mass_max": float((wt * lost).sum(axis=-1).max()),
                        "cond_err": float(np.max(err / mag)),
                        "rel_fro": float(np.linalg.norm(err) / np.linalg.norm(ref)),
                        "bound_ratio": float(np.max(err / bnd)),
                    }
                )
    return records


#: Line colour of each static scale S in the plot (the same S, the same colour in both rows).
_COLORS = {1.0: "tab:red", 256.0: "tab:blue", 448.0: "tab:green", 32768.0: "tab:purple"}
_STYLES = {"forward": "-", "reverse": "--"}
#: Marker and size of each static scale S: curves that coincide (E5M2's errors do not depend
#: on S) stay visible as nested markers, the first drawn the largest.
_MARKERS = {1.0: ("o", 10), 256.0: ("s", 7), 448.0: ("^", 5), 32768.0: ("D", 4)}


def _by_delta(sel: list[dict[str, Any]], key: str, deltas: list[float], agg: Any) -> list[float]:
    return [float(agg([r[key] for r in sel if r["delta"] == dl])) for dl in deltas]


def _plot_format(axes: Any, records: list[dict[str, Any]], fmt: str, deltas: list[float]) -> None:
    """One row of panels: ``fa_fp8``'s underflow and error, then the RMS error of a few runs."""
    name = fmt.upper()
    fa = [r for r in records if r["variant"] == "fa_fp8" and r["p_cast"] == fmt]
    seeds = len({r["seed"] for r in records})
    for sp in sorted({r["p_scale"] for r in fa}):
        col = _COLORS.get(sp, "k")
        mk, ms = _MARKERS.get(sp, ("o", 5))
        for order, style in _STYLES.items():
            sel = [r for r in fa if r["p_scale"] == sp and r["order"] == order]
            lab = f"S={sp:g}, {order}"
            uf = _by_delta(sel, "underflow_frac", deltas, np.mean)
            pr = _by_delta(sel, "pred_threshold", deltas, np.mean)
            axes[0].plot(deltas, uf, style, color=col, marker=mk, ms=ms, label=f"{lab} (emulated)")
            axes[0].plot(deltas, pr, ":", color=col, marker="x", ms=8, alpha=0.8)
            if order == "forward":
                la = _by_delta(sel, "pred_lau", deltas, np.mean)
                axes[0].plot(deltas, la, "-", color=col, lw=4, alpha=0.2)
            med = _by_delta(sel, "cond_err", deltas, np.median)
            lo = _by_delta(sel, "cond_err", deltas, min)
            hi = _by_delta(sel, "cond_err", deltas, max)
            axes[1].errorbar(
                deltas,
                med,
                yerr=[np.subtract(med, lo), np.subtract(hi, med)],
                fmt=style,
                color=col,
                marker=mk,
                ms=ms,
                capsize=3,
                label=lab,
            )
    base = [r for r in records if r["variant"] == "fa_fp32"]
    axes[1].plot(
        deltas,
        _by_delta(base, "cond_err", deltas, np.median),
        "k-",
        marker="s",
        label="fa_fp32 (BF16 P)",
    )
    axes[0].set(
        xlabel="sink strength Delta (nats)",
        ylabel=f"fraction of ordinary P lost ({name} -> 0)",
        title=(
            f"{name} fa_fp8 underflow: o/-- emulated, x: threshold model,\n"
            "wide band: Lau 2026 closed form"
        ),
    )
    axes[1].set(
        xlabel="sink strength Delta (nats)",
        ylabel="max |out - ref| / sum_k w|v|",
        yscale="log",
        title=f"{name} fa_fp8 condition-aware error (median, min-max over {seeds} seeds)",
    )
    scales = sorted({r["p_scale"] for r in fa})
    top = scales[-1]
    mid = 256.0 if 256.0 in scales else top
    picks = [
        ("fa_fp32", "bf16", 1.0, "forward", "k", "-"),
        ("fa_fp8", fmt, 1.0, "forward", _COLORS[1.0], "-"),
        ("fa_fp8", fmt, mid, "reverse", _COLORS.get(mid, "k"), "--"),
        ("amla_fp8", fmt, mid, "reverse", "tab:orange", "--"),
        ("amla_fp8", fmt, top, "forward", "tab:brown", "-"),
    ]
    other = [f for f in FP8_FORMATS if f != fmt and any(r["p_cast"] == f for r in records)]
    picks += [("fa_fp8", f, mid, "reverse", "0.6", ":") for f in other]
    for i, (variant, pc, sp, order, col, style) in enumerate(picks):
        key = (variant, pc, sp, order)
        sel = [r for r in records if (r["variant"], r["p_cast"], r["p_scale"], r["order"]) == key]
        if not sel:
            continue
        sat = sum(r["saturated"] for r in sel)
        lab = f"{variant} {pc.upper()} S={sp:g} {order}" + (f" ({sat} saturated)" if sat else "")
        rms = _by_delta(sel, "rel_fro", deltas, np.median)
        axes[2].plot(deltas, rms, style, color=col, marker="o", ms=max(11 - 2 * i, 3), label=lab)
    axes[2].set(
        xlabel="sink strength Delta (nats)",
        ylabel="||out - ref||_F / ||ref||_F",
        yscale="log",
        title=f"{name} normwise (RMS) error, median over seeds",
    )
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    # the gap between the BF16-P baseline and the FP8 curves (the y axes are shared by column)
    axes[2].legend(fontsize=7, ncol=2, loc="center", bbox_to_anchor=(0.5, 0.36))
    for ax in axes:
        ax.grid(alpha=0.3)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """One row of three panels per FP8 format in ``records``; the y axes shared by column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fmts = [f for f in FP8_FORMATS if any(r["p_cast"] == f for r in records)]
    deltas = sorted({r["delta"] for r in records})
    fig, axes = plt.subplots(
        len(fmts), 3, figsize=(18, 4.8 * len(fmts)), sharey="col", squeeze=False
    )
    for row, fmt in zip(axes, fmts, strict=True):
        _plot_format(row, records, fmt, deltas)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary(records: list[dict[str, Any]]) -> None:
    """Per variant and format: runs, the largest bound_ratio, exact threshold predictions."""
    print("variant  p_cast  runs  max bound_ratio  threshold exact  saturated runs")
    for key in dict.fromkeys((r["variant"], r["p_cast"]) for r in records):
        sel = [r for r in records if (r["variant"], r["p_cast"]) == key]
        exact = sum(r["underflow_frac"] == r["pred_threshold"] for r in sel)
        sat = sum(r["saturated"] > 0 for r in sel)
        worst = max(r["bound_ratio"] for r in sel)
        print(
            f"{key[0]:8s} {key[1]:6s} {len(sel):5d} {worst:16.3f} {exact:10d}/{len(sel)} {sat:8d}"
        )


def main(argv: list[str] | None = None) -> None:
    records, _ = experiment_main(
        argv,
        doc=__doc__ or "",
        name="fp8_sinks",
        quick_help="3 deltas, 1 seed, N = 1024, 4 rows, 2 scales per format",
        run=lambda quick: (
            run([0.0, 8.0, 14.0], QUICK_SCALES, [0], n=1024, rows=4)
            if quick
            else run(list(np.arange(0.0, 17.0, 2.0)), SCALES, [0, 1, 2])
        ),
        plot=plot,
    )
    print(
        "variant  p_cast delta  S      order    underflow  pred_thr  pred_lau  cond_err"
        "   rel_fro  bound_ratio"
    )
    for r in records:
        if r["seed"] == 0:
            print(
                f"{r['variant']:8s} {r['p_cast']:6s} {r['delta']:5.1f} {r['p_scale']:6g} "
                f"{r['order']:8s} {r['underflow_frac']:9.4f} {r['pred_threshold']:9.4f} "
                f"{r['pred_lau']:9.4f} {r['cond_err']:9.2e} {r['rel_fro']:9.2e} "
                f"{r['bound_ratio']:9.2e}"
            )
    _summary(records)


if __name__ == "__main__":
    main()
