"""Render a :class:`~amla_numerics.analysis.report.Report` as text: table, Markdown, CSV, JSON.

Pure: the same report renders the same text. ``table`` and ``markdown`` print one accuracy
table per head dim, then the throughput join, then any bound violation, then a legend.

Examples
--------
>>> from amla_numerics.analysis.report import ReportConfig, build_report
>>> cfg = ReportConfig(head_dims=(64,), kv_lens=(256,), block_n=128, variants=("fa_fp32",),
...                    workloads=("random",), rows=2, plots=False)
>>> print(render(build_report(cfg, throughput=False)).splitlines()[0])
head dim 64
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from amla_numerics.analysis.grid import Record
from amla_numerics.analysis.report import Report, clean_json

__all__ = ["LOOSE_RATIO", "render"]


def render(report: Report, style: str = "table") -> str:
    """Render as ``table`` (one table per head dim), ``markdown``, ``csv`` or ``json``."""
    if style == "json":
        return json.dumps(report.to_json(), indent=2, allow_nan=False)
    if style == "csv":
        return _render_csv(report)
    if style not in ("table", "markdown"):
        raise ValueError(f"unknown format {style!r}; valid: table, json, csv, markdown")
    md = style == "markdown"
    parts = []
    if md:
        parts.append(f"# amla-numerics report\n\n`{report.header['command']}`\n")
    seeded = len(report.header.get("seeds", ())) > 1 and bool(report.summaries)
    for d in sorted({r.head_dim for r in report.records}):
        title = f"head dim {d}"
        parts.append(f"## {title}\n" if md else f"{title}\n{'=' * len(title)}")
        if seeded:
            rows_s = [s for s in report.summaries if s["head_dim"] == d]
            parts.append(_table(_SEED_COLUMNS, [_seed_row(s) for s in rows_s], md))
        else:
            rows = [r for r in report.records if r.head_dim == d]
            parts.append(_table(_ACCURACY_COLUMNS, [_accuracy_row(r) for r in rows], md))
    if report.throughput:
        t0 = report.throughput[0]
        title = (
            f"modelled throughput (pipeline model, {t0.get('hardware')}): the MLA decode shape "
            f"batch {t0.get('batch')}, s_q {t0.get('q_len')}, s_k {t0.get('kv_len')}, "
            f"{t0.get('heads')} heads, d 576/512 (not the grid's shapes); intervals: nominal and "
            "a 16-point Latin hypercube over the unsourced hardware parameters' ranges, jointly"
        )
        parts.append(f"## {title}\n" if md else f"{title}\n{'=' * len(title)}")
        parts.append(
            _table(_THROUGHPUT_COLUMNS, [_throughput_row(t) for t in report.throughput], md)
        )
    if report.violations:
        parts.append(
            "BOUND VIOLATIONS (a covered element above its bound or not finite: a bug, "
            "FP32 overflow or a wrong model):\n" + "\n".join(f"  - {v}" for v in report.violations)
        )
    if report.hazard_failures:
        parts.append(
            "HAZARDS (wrong values from the integer add, FP32 overflow, scores beyond the work "
            "format or the policy's O clip; exit 1 with "
            "--fail-on-hazard):\n" + "\n".join(f"  - {v}" for v in report.hazard_failures)
        )
    parts.append(_SEED_LEGEND if seeded else _LEGEND)
    return "\n\n".join(parts) + "\n"


_ACCURACY_COLUMNS = (
    "variant",
    "workload",
    "N",
    "cond max",
    "cond p99.9",
    "cond med",
    "bias",
    "row max",
    "rel Frob",
    "BF16 ULP",
    "BF16 wrong",
    "bound max",
    "bound med",
    "meas/bound",
    "hazards",
)
_SEED_COLUMNS = (
    "variant",
    "workload",
    "N",
    "seeds",
    "rel Frob mean [95% CI]",
    "cond med mean [95% CI]",
    "cond max mean [95% CI]",
    "Frob / fa_fp32 [95% CI]",
    "BF16 wrong",
    "bound max",
    "meas/bound",
    "hazards",
)
_THROUGHPUT_COLUMNS = (
    "variant",
    "TFLOPS",
    "TFLOPS interval",
    "util",
    "peak",
    "bound by",
    "time us",
    "HBM GB/s",
)
_LEGEND = (
    "cond: |out - ref| / sum_k p_ik |v_kj| in u_fp32 = 2**-24 (max, 99.9th percentile, median; "
    "bias: signed mean); row max: max over rows of ||out_i - ref_i|| / ||ref_i||; rel Frob: "
    "||out - ref||_F / ||ref||_F; BF16 ULP / wrong: the output cast to BF16 against the "
    "correctly rounded reference (max ULP distance, which counts every tiny value between two "
    "outputs near zero; share not correctly rounded); bound max / "
    "med: the deterministic a priori bound on the cond scale (cond max <= bound max when it "
    "holds); meas/bound: max over covered elements of error / bound (> 1 fails; < 0.01 loose); "
    "hazards: counts by class (clamp is informational; 'excluded' elements, touched by a garbage "
    "class (integer add, o_clip, score_range), are left out of the bound check); N/S8: the "
    "keys split into 8 split-KV splits (--splits), the bound is the split bound."
)
_SEED_LEGEND = (
    "Over seeds: means with two-sided 95 % Student t intervals; rel Frob: ||out - ref||_F / "
    "||ref||_F; cond: |out - ref| / sum_k p_ik |v_kj| in u_fp32 = 2**-24 (median, max per seed); "
    "Frob / fa_fp32: geometric mean of the per-seed ratio to fa_fp32, paired by seed; BF16 "
    "wrong: mean share of BF16 outputs not correctly rounded; bound max, meas/bound: worst "
    "seed (> 1 fails); hazards: totals by class (clamp informational)."
)


def _n(kv_len: int, splits: int) -> str:
    """The KV length, with ``/S`` for a split-KV run of S splits."""
    return str(kv_len) if splits == 1 else f"{kv_len}/S{splits}"


def _hazard_text(hazards: dict[str, int], excluded: int, nonfinite: int) -> str:
    hz = ", ".join(f"{k}={v}" for k, v in sorted(hazards.items()) if v) or "-"
    if excluded:
        hz += f" ({excluded} excluded)"
    if nonfinite:
        hz += f" ({nonfinite} non-finite out)"
    return hz


def _accuracy_row(r: Record) -> list[str]:
    m = r.metrics
    return [
        r.variant,
        r.workload,
        _n(r.kv_len, r.splits),
        _g(m.cond_err_max),
        _g(m.cond_err_p999),
        _g(m.cond_err_median),
        _signed(m.cond_err_mean_signed),
        _g(m.row_rel_max),
        _g(m.rel_fro),
        _g(m.bf16_out_max_ulp),
        _pct(m.bf16_out_incorrect_frac),
        _g(r.bound_cond_max),
        _g(r.bound_cond_median),
        _ratio(r.bound_ratio, r.n_violations),
        _hazard_text(r.hazards, r.n_uncovered, m.n_nonfinite),
    ]


def _seed_row(s: dict[str, Any]) -> list[str]:
    return [
        s["variant"],
        s["workload"],
        _n(s["kv_len"], s.get("splits", 1)),
        str(s["n_seeds"]),
        _ci(s["rel_fro_mean"], s["rel_fro_ci95"]),
        _ci(s["cond_err_median_mean"], s["cond_err_median_ci95"]),
        _ci(s["cond_err_max_mean"], s["cond_err_max_ci95"]),
        _ci(s["rel_fro_ratio_fa_fp32"], s["rel_fro_ratio_fa_fp32_ci95"]),
        _pct(s["bf16_out_incorrect_frac_mean"]),
        _g(s["bound_cond_max_worst"]),
        _ratio(s["bound_ratio_max"], s["n_violations"]),
        _hazard_text(s["hazards"], 0, 0),
    ]


def _ci(mean: float | None, ci: list[float | None]) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    lo, hi = ci
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return _g(mean)
    return f"{_g(mean)} [{_g(lo)}, {_g(hi)}]"


def _signed(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:+.3g}"


def _pct(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{100 * x:.3g} %"


def _throughput_row(t: dict[str, Any]) -> list[str]:
    rng = t.get("tflops_range")
    return [
        t["variant"],
        f"{t['tflops']:.1f}",
        f"[{rng[0]:.1f}, {rng[1]:.1f}]" if rng else "-",
        f"{100 * t['utilization']:.1f} %",
        t["peak_name"],
        str(t["bound"]),
        f"{t['time_us']:.1f}",
        f"{t['hbm_gbps']:.0f}",
    ]


#: measured/bound below this is marked as a loose bound in the tables.
LOOSE_RATIO = 1e-2


def _ratio(x: float, violations: int) -> str:
    if violations:
        return f"{_g(x)} (VIOLATED)"
    if x is None or math.isnan(x):
        return "no bound"
    return f"{x:.3g} (loose)" if x < LOOSE_RATIO else _g(x)


def _g(x: float | None) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _table(columns: tuple[str, ...], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
        return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = "  ".join([f"{{:<{widths[0]}}}"] + [f"{{:>{w}}}" for w in widths[1:]])
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line.format(*columns), sep] + [line.format(*r) for r in rows])


def _render_csv(report: Report) -> str:
    buf = io.StringIO()
    records = [clean_json(r.to_dict()) for r in report.records]
    if not records:
        return ""
    for rec in records:
        rec["hazards"] = ";".join(f"{k}={v}" for k, v in sorted(rec["hazards"].items()))
        for key in ("worst_index", "hist_ulp_fp32", "hist_cond_err"):
            rec[key] = ";".join(str(x) for x in rec[key])
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()
