"""Assemble a :class:`~amla_numerics.analysis.report.Report` and write its files.

:func:`build_report` runs the grid (accuracy), joins each variant's modelled throughput on
the MLA decode workload (the pipeline model, when installed), and lists every record whose
measured error exceeds its deterministic a priori bound. :func:`write_outputs` writes
``report.json``, ``report.md`` and the plots.

The join: the ``lazy`` variant's rescale probability per block is not a guess but the
fraction of (row, block) steps that rescaled in the emulator's traces on the report's own
``mla`` records (every workload's when ``mla`` is not in the grid).

Examples
--------
>>> from amla_numerics.analysis.report import ReportConfig
>>> cfg = ReportConfig(head_dims=(64,), kv_lens=(256,), block_n=128, variants=("fa_fp32",),
...                    workloads=("random",), rows=2)
>>> rep = build_report(cfg, throughput=False)
>>> len(rep.records), rep.violations
(1, ())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amla_numerics.analysis.grid import Record, case_from_file, expand_grid, run_grid
from amla_numerics.analysis.report import Report, ReportConfig, make_header, render
from amla_numerics.variants import VARIANTS

__all__ = ["MLA_DECODE", "build_report", "lazy_rescale_prob", "throughput_rows", "violations", "write_outputs"]

#: The pipeline configuration of the throughput join: DeepSeek-V3 MLA decode with MTP.
MLA_DECODE: dict[str, Any] = {"hardware": "ascend910c", "batch": 128, "q_len": 2, "kv_len": 16384}


def build_report(
    config: ReportConfig,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    throughput: bool = True,
    progress: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
) -> Report:
    """Measure the grid of ``config`` and assemble the report.

    Parameters
    ----------
    config : ReportConfig
    jobs : int
        Worker processes for the grid.
    scheduler : str, optional
        A Dask distributed scheduler address (``--scheduler``).
    throughput : bool
        Join the pipeline model's throughput per variant.
    progress : callable, optional
        ``progress(done, total)`` after each case.
    argv : list of str, optional
        The command line, recorded in the header.
    """
    variants = config.variants or VARIANTS
    cases = expand_grid(
        head_dims=config.head_dims,
        kv_lens=config.kv_lens,
        workloads=config.workloads,
        seeds=config.seeds,
        rows=config.rows,
        block_n=config.block_n,
        c=config.c,
    )
    cases += [case_from_file(path, block_n=config.block_n, c=config.c) for path in config.inputs]
    records = run_grid(cases, variants, jobs=jobs, scheduler=scheduler, progress=progress)
    rows = throughput_rows(variants, records) if throughput else ()
    return Report(
        header=make_header(config, argv),
        records=tuple(records),
        throughput=tuple(rows),
        violations=tuple(violations(records)),
    )


def violations(records: Sequence[Record]) -> list[str]:
    """Records whose error exceeds the deterministic bound (hazard-free records only).

    A record with integer-add hazards is outside the bound's model: its hazards are
    reported in their own column instead.
    """
    out = []
    for r in records:
        if r.bound_ratio > 1.0 and not any(r.hazards.values()):
            out.append(
                f"{r.variant} d={r.head_dim} N={r.kv_len} {r.workload} seed={r.seed}: "
                f"measured/bound = {r.bound_ratio:.3g}"
            )
    return out


def lazy_rescale_prob(records: Sequence[Record]) -> float | None:
    """Mean rescale rate of the ``lazy`` records (``mla`` ones if any), None if none."""
    lazy = [r for r in records if r.variant == "lazy" and np.isfinite(r.rescale_rate)]
    mla = [r for r in lazy if r.workload == "mla"]
    chosen = mla or lazy
    return float(np.mean([r.rescale_rate for r in chosen])) if chosen else None


def throughput_rows(variants: Sequence[str], records: Sequence[Record]) -> list[dict[str, Any]]:
    """Each variant's modelled throughput on :data:`MLA_DECODE` (empty without the model)."""
    try:
        from amla_numerics.pipeline import evaluate
    except ImportError:  # the pipeline model is optional
        return []
    prob = lazy_rescale_prob(records)
    rows = []
    for variant in variants:
        res = evaluate(
            MLA_DECODE["hardware"],
            variant,
            batch=MLA_DECODE["batch"],
            q_len=MLA_DECODE["q_len"],
            kv_len=MLA_DECODE["kv_len"],
            rescale_prob=prob if variant == "lazy" else None,
        )
        row = {"variant": variant, **res.to_dict()}
        row["rescale_prob"] = prob if variant == "lazy" else None
        rows.append(row)
    return rows


def write_outputs(report: Report, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (with ``plots``) the PNG plots.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, style in (("report.json", "json"), ("report.md", "markdown")):
        path = out_dir / name
        path.write_text(render(report, style))
        written.append(path)
    if plots:
        from amla_numerics.analysis import plots as plotting

        written.extend(plotting.save_report_plots(report, out_dir))
    return written
