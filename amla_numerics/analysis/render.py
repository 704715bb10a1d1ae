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
    for d in sorted({r.head_dim for r in report.records}):
        rows = [r for r in report.records if r.head_dim == d]
        title = f"head dim {d}"
        parts.append(f"## {title}\n" if md else f"{title}\n{'=' * len(title)}")
        parts.append(_table(_ACCURACY_COLUMNS, [_accuracy_row(r) for r in rows], md))
    if report.throughput:
        t0 = report.throughput[0]
        title = (
            f"modelled throughput (pipeline model, {t0.get('hardware')}): the MLA decode shape "
            f"batch {t0.get('batch')}, s_q {t0.get('q_len')}, s_k {t0.get('kv_len')}, "
            f"{t0.get('heads')} heads, d 576/512 (not the grid's shapes); intervals over the "
            "unsourced hardware parameters"
        )
        parts.append(f"## {title}\n" if md else f"{title}\n{'=' * len(title)}")
        parts.append(
            _table(_THROUGHPUT_COLUMNS, [_throughput_row(t) for t in report.throughput], md)
        )
    if report.violations:
        parts.append("BOUND VIOLATIONS (measured/bound > 1: a bug or a wrong model):")
        parts.extend(f"  - {v}" for v in report.violations)
    parts.append(_LEGEND)
    return "\n\n".join(parts) + "\n"


_ACCURACY_COLUMNS = (
    "variant",
    "workload",
    "N",
    "max ULP32",
    "p99.9 ULP32",
    "med ULP32",
    "max ULP16",
    "mean signed",
    "sign p",
    "rel Frob",
    "bound ULP32",
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
    "ULP32/ULP16: |out - ref| in FP32/BF16 ULPs at the reference; mean signed: mean signed "
    "FP32 ULP error (bias), sign p: two-sided sign-test p-value; bound ULP32: deterministic a "
    "priori bound at the median element; meas/bound: max over elements of error/bound "
    "(> 1 fails the report; < 0.01 marks a loose bound); hazards: integer-add hazards by class."
)


def _accuracy_row(r: Record) -> list[str]:
    m = r.metrics
    hz = ", ".join(f"{k}={v}" for k, v in sorted(r.hazards.items()) if v) or "-"
    if m.n_nonfinite:
        hz += f" ({m.n_nonfinite} non-finite out)"
    return [
        r.variant,
        r.workload,
        str(r.kv_len),
        _g(m.max_ulp_fp32),
        _g(m.p999_ulp_fp32),
        _g(m.median_ulp_fp32),
        _g(m.max_ulp_bf16),
        f"{m.mean_signed_ulp_fp32:+.3g}",
        _g(m.sign_test_p),
        _g(m.rel_fro),
        _g(r.bound_ulp_fp32),
        _ratio(r.bound_ratio, any(r.hazards.values())),
        hz,
    ]


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


def _ratio(x: float, hazards: bool) -> str:
    if x > 1.0:  # a record with integer-add hazards is outside the bound's model
        return f"{x:.3g} (hazards)" if hazards else f"{x:.3g} (VIOLATED)"
    return f"{x:.3g} (loose)" if x < LOOSE_RATIO else _g(x)


def _g(x: float) -> str:
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
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()
