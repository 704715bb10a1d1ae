"""The error-bound report: its configuration, the measurement, the header, the JSON document.

A :class:`Report` is the header (seeds, library versions, reference precision, the command)
plus the grid's records and, when the pipeline model is available, each variant's modelled
throughput on the MLA decode workload. Rendering is in
:mod:`~amla_numerics.analysis.render`.

JSON schema (``--format json`` and ``report.json``)::

    {"header": {"tool", "version", "command", "seeds", "libraries": {name: version},
                "reference": {"method", "dps", "certified_ulp_fp32"}, "policy", "config"},
     "records": [{"head_dim", "kv_len", "variant", "workload", "seed", "rows", "block_n",
                  "n", "n_nonfinite", "median_ulp_fp32", "p90_ulp_fp32", "p99_ulp_fp32",
                  "p999_ulp_fp32", "max_ulp_fp32", "median_ulp_bf16", "p999_ulp_bf16",
                  "max_ulp_bf16", "mean_signed_ulp_fp32", "sign_test_p", "rel_fro",
                  "max_abs", "rmse", "cosine", "rel_l1", "bound_ulp_fp32", "bound_ratio",
                  "prob_bound_ratio", "hazards": {class: count}, "rescale_rate", "c"}, ...],
     "throughput": [{"variant", "tflops", "utilization", "peak_tflops", "peak_name",
                     "bound", "time_us", "hbm_gbps", "rescale_prob"}, ...],
     "violations": [human-readable strings: records whose measured/bound > 1],
     "c_sweep": [records of the compensation sweep (plots), same schema as "records"]}

ULP fields are in units of the FP32 / BF16 ULP at the reference value; ``bound_ratio`` is
``max(|out - ref| / bound)`` over the finite outputs.

Examples
--------
>>> cfg = ReportConfig(head_dims=(64,), kv_lens=(256,), block_n=128, variants=("fa_fp32",),
...                    workloads=("random",), rows=2, plots=False)
>>> rep = build_report(cfg, throughput=False)
>>> len(rep.records), rep.violations
(1, ())
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from amla_numerics._version import __version__
from amla_numerics.analysis.grid import (
    Case,
    Record,
    case_from_file,
    evaluate_case,
    expand_grid,
    run_grid,
)
from amla_numerics.reference import AUTO_ULP_FP32
from amla_numerics.variants import DEFAULT_C, VARIANTS

__all__ = [
    "DEFAULT_HEAD_DIMS",
    "MLA_DECODE",
    "Report",
    "ReportConfig",
    "build_report",
    "clean_json",
    "lazy_rescale_prob",
    "make_header",
    "throughput_rows",
    "violations",
    "write_outputs",
]

#: The pipeline configuration of the throughput join: DeepSeek-V3 MLA decode with MTP.
MLA_DECODE: dict[str, Any] = {"hardware": "ascend910c", "batch": 128, "q_len": 2, "kv_len": 16384}

#: Latin-hypercube samples behind each throughput row's interval (same seed for every
#: variant, so the rows share their parameter samples; docs/pipeline.md section 7).
THROUGHPUT_SAMPLES = 2

DEFAULT_HEAD_DIMS: tuple[int, ...] = (64, 128, 192, 256, 576)

_LIBRARIES = ("numpy", "mpmath", "scipy", "ml_dtypes", "matplotlib", "gmpy2")


@dataclass(frozen=True)
class ReportConfig:
    """What the report measures (the CLI options, validated)."""

    head_dims: tuple[int, ...] = DEFAULT_HEAD_DIMS
    kv_lens: tuple[int, ...] = (2048,)
    block_n: int = 512
    variants: tuple[str, ...] = ()
    workloads: tuple[str, ...] = ("random", "mla", "drift")
    seeds: tuple[int, ...] = (0,)
    rows: int = 16
    c: float = DEFAULT_C
    inputs: tuple[str, ...] = ()  # users' .npz files, measured besides the workloads
    #: Run the plots' own measurements (the c sweep and the traced case) as part of the build.
    plots: bool = True
    #: The compensation sweep drawn in ``error_vs_c.png``: ``amla`` at each c on one case,
    #: ``amla_nocomp`` and ``fa_fp32`` once. The ``mla`` workload with 128-key blocks: its row
    #: max creeps up over many blocks while the old blocks keep their weight, which is where
    #: compensation matters (on ``drift`` each new block outweighs the old ones).
    c_sweep: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.39, 1.44, 1.5, 1.75, 2.0)
    c_sweep_case: Case = field(default_factory=lambda: Case(128, 4096, "mla", 0, 16, 128))
    #: The case whose per-block ``amla`` trace is drawn in ``block_trace.png``.
    trace_case: Case = field(default_factory=lambda: Case(128, 4096, "drift", 0, 4, 512))


@dataclass(frozen=True)
class Report:
    """Everything a report shows; render it with :func:`~amla_numerics.analysis.render.render`."""

    header: dict[str, Any]
    records: tuple[Record, ...]
    throughput: tuple[dict[str, Any], ...] = ()
    violations: tuple[str, ...] = field(default=())
    c_sweep: tuple[Record, ...] = ()
    trace: Any = None  # the emulator's Trace of config.trace_case (amla), when measured

    def to_json(self) -> dict[str, Any]:
        """The JSON document (see the module docstring)."""
        return {
            "header": self.header,
            "records": [clean_json(r.to_dict()) for r in self.records],
            "throughput": [clean_json(t) for t in self.throughput],
            "violations": list(self.violations),
            "c_sweep": [clean_json(r.to_dict()) for r in self.c_sweep],
        }


def make_header(config: ReportConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """The report header: tool, versions, seeds, reference precision, command."""
    libs = {}
    for name in _LIBRARIES:
        try:
            libs[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {
        "tool": "amla-numerics",
        "version": __version__,
        "command": " ".join(["amla-numerics", *(argv if argv is not None else sys.argv[1:])]),
        "seeds": list(config.seeds),
        "libraries": libs,
        "python": sys.version.split()[0],
        "reference": {
            "method": "auto",
            "dps": 50,
            "certified_ulp_fp32": AUTO_ULP_FP32,
            "note": "certified fast oracle; elements whose bound exceeds 1e-3 FP32 ULP are "
            "recomputed with mpmath; outputs correctly rounded to float64",
        },
        "policy": "ascend",
        "config": asdict(config),
    }


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
    sweep, trace = (_plot_measurements(config)) if config.plots else ((), None)
    return Report(
        header=make_header(config, argv),
        records=tuple(records),
        throughput=tuple(rows),
        violations=tuple(violations(records)),
        c_sweep=tuple(sweep),
        trace=trace,
    )


def _plot_measurements(config: ReportConfig) -> tuple[list[Record], Any]:
    """The plots' own measurements: the compensation sweep and one traced ``amla`` run."""
    from amla_numerics import flash

    case = config.c_sweep_case
    sweep = evaluate_case(case, ["amla"], cs=config.c_sweep)
    sweep += evaluate_case(case, ["amla_nocomp", "fa_fp32"])
    t = config.trace_case
    w = t.make()
    res = flash.attention(w.q, w.k, w.v, "amla", scale=w.scale, block_n=t.block_n, trace=True)
    return sweep, res.trace


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
            samples=THROUGHPUT_SAMPLES,  # tflops_range over the unsourced parameters' ranges
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
    from amla_numerics.analysis.render import render

    for name, style in (("report.json", "json"), ("report.md", "markdown")):
        path = out_dir / name
        path.write_text(render(report, style))
        written.append(path)
    if plots:
        from amla_numerics.analysis import plots as plotting

        written.extend(plotting.save_report_plots(report, out_dir))
    return written


def clean_json(d: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf -> None, so the JSON is strict."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, dict):
            v = clean_json(v)
        out[k] = v
    return out
