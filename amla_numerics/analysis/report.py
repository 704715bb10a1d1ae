"""The error-bound report: its configuration, the measurement, the header, the JSON document.

A :class:`Report` is the header (seeds, library versions, reference precision, the command)
plus the grid's records and, when the pipeline model is available, each variant's modelled
throughput on the MLA decode workload. Rendering is in
:mod:`~amla_numerics.analysis.render`, the files in :mod:`~amla_numerics.analysis.outputs`.

JSON schema (``--format json`` and ``report.json``)::

    {"header": {"tool", "version", "command", "seeds", "libraries": {name: version},
                "reference": {"method", "dps", "certified_ulp_fp32"}, "policy", "units",
                "intervals", "config"},
     "records": [{"head_dim", "kv_len", "variant", "workload", "seed", "rows", "block_n",
                  "policy", "c", "n", "n_nonfinite", "n_ref_nonfinite",
                  "cond_err_max", "cond_err_p999", "cond_err_median", "cond_err_mean_signed",
                  "row_rel_max", "row_rel_median", "rel_fro", "bf16_out_max_ulp",
                  "bf16_out_incorrect_frac", "lse_err_max", "worst_index",
                  "bound_cond_max", "bound_cond_median", "bound_ratio", "prob_bound_ratio",
                  "n_covered", "n_uncovered", "n_violations",
                  "hazards": {class: count}, "rescale_rate",
                  secondary: "max_ulp_fp32", "p999_ulp_fp32", "median_ulp_fp32",
                  "p90_ulp_fp32", "p99_ulp_fp32", "max_ulp_bf16", "median_ulp_bf16",
                  "p999_ulp_bf16", "mean_signed_ulp_fp32", "sign_test_p", "bound_ulp_fp32",
                  "max_abs", "rmse", "cosine", "rel_l1", "hist_ulp_fp32", "hist_cond_err"}, ...],
     "summaries": [{"head_dim", "kv_len", "variant", "workload", "seeds", "n_seeds",
                    "rel_fro_mean", "rel_fro_ci95": [lo, hi], "cond_err_median_mean",
                    "cond_err_median_ci95", "cond_err_max_mean", "cond_err_max_ci95",
                    "cond_err_max_worst", "bf16_out_incorrect_frac_mean",
                    "rel_fro_ratio_fa_fp32", "rel_fro_ratio_fa_fp32_ci95",
                    "cond_err_median_ratio_fa_fp32", "cond_err_median_ratio_fa_fp32_ci95",
                    "bound_cond_max_worst", "bound_ratio_max", "n_violations",
                    "hazards": {class: total}}, ...],
     "throughput": [{"variant", "tflops", "utilization", "peak_tflops", "peak_name",
                     "bound", "time_us", "hbm_gbps", "rescale_prob"}, ...],
     "violations": [human-readable strings: records with covered elements above their bound
                    or non-finite],
     "hazard_failures": [records whose hazards left wrong values (``--fail-on-hazard``)],
     "c_sweep": [records of the compensation sweep (plots), same schema as "records"]}

Units: ``cond_err_*`` and ``bound_cond_*`` in ``u_fp32 = 2**-24`` of ``sum_k p_ik |v_kj|``;
``row_rel_*`` and ``rel_fro`` relative; ``bf16_out_max_ulp`` in BF16 ULPs of the output as
written; ``lse_err_max`` in ``u_fp32`` (absolute nats / 2**-24 = relative error of the
softmax denominator). Secondary ULP fields are in ULPs at each element's own reference.
``bound_ratio`` is the max over covered elements of ``|out - ref| / bound``. Intervals are
two-sided 95 % Student t intervals over seeds (n - 1 degrees of freedom); ratios to
``fa_fp32`` are paired by seed and computed on log ratios (a geometric mean and its
back-transformed interval).

Examples
--------
>>> cfg = ReportConfig(head_dims=(64,), kv_lens=(256,), block_n=128, variants=("fa_fp32",),
...                    workloads=("random",), rows=2, plots=False)
>>> rep = build_report(cfg, throughput=False)
>>> len(rep.records), rep.violations, rep.records[0].n_violations
(1, (), 0)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
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
from amla_numerics.analysis.metrics import reference_ulp
from amla_numerics.analysis.stats import mean_ci95, paired_ratio_ci95
from amla_numerics.reference import AUTO_ULP_FP32
from amla_numerics.variants import DEFAULT_C, VARIANTS

__all__ = [
    "DEFAULT_HEAD_DIMS",
    "MLA_DECODE",
    "Report",
    "ReportConfig",
    "build_report",
    "clean_json",
    "hazard_failures",
    "lazy_rescale_prob",
    "make_header",
    "summarize",
    "throughput_rows",
    "violations",
]

#: The pipeline configuration of the throughput join: DeepSeek-V3 MLA decode with MTP.
MLA_DECODE: dict[str, Any] = {"hardware": "ascend910c", "batch": 128, "q_len": 2, "kv_len": 16384}

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
    #: The emulator's precision policy, a preset name (``--policy``).
    policy: str = "ascend"
    #: Rows decided together for the lazy rescale probability (None: all rows of a case).
    group_rows: int | None = None
    #: Split-KV split counts measured (``--splits``; 1: unsplit) and the combine modelled.
    splits: tuple[int, ...] = (1,)
    combine: str = "cann"
    #: Run the plots' own measurements (the c sweep, the traced case, the scatter case) as
    #: part of the build.
    plots: bool = True
    #: The compensation sweep drawn in ``error_vs_c.png``: ``amla`` at each c on one case
    #: per seed, ``amla_nocomp`` and ``fa_fp32`` once per seed. The ``mla`` workload with
    #: 128-key blocks: its row max creeps up over many blocks while the old blocks keep their
    #: weight, which is where compensation matters (on ``drift`` each new block outweighs the
    #: old ones). 2 ln 2 = 1.386 (mean-square optimum for uniform mantissas) and
    #: 1/ln 2 = 1.443 (zero bias) are among the points.
    c_sweep: tuple[float, ...] = (0.5, 1.0, 1.25, 1.3, 1.35, 1.386, 1.443, 1.5, 1.6, 1.75, 2.0)
    c_sweep_case: Case = field(default_factory=lambda: Case(128, 4096, "mla", 0, 16, 128))
    #: Seeds of the c sweep (its intervals are over these).
    c_sweep_seeds: tuple[int, ...] = tuple(range(8))
    #: The case whose per-block ``amla`` trace is drawn in ``block_trace.png``.
    trace_case: Case = field(default_factory=lambda: Case(128, 4096, "drift", 0, 4, 512))
    #: The case whose per-element errors are drawn against ``sum p|v|`` and ``|ref|``
    #: (``error_scatter.png``).
    scatter_case: Case = field(default_factory=lambda: Case(576, 2048, "mla", 0, 16, 512))


@dataclass(frozen=True)
class Report:
    """Everything a report shows; render it with :func:`~amla_numerics.analysis.render.render`."""

    header: dict[str, Any]
    records: tuple[Record, ...]
    throughput: tuple[dict[str, Any], ...] = ()
    violations: tuple[str, ...] = field(default=())
    c_sweep: tuple[Record, ...] = ()
    trace: Any = None  # the emulator's Trace of config.trace_case (amla), when measured
    summaries: tuple[dict[str, Any], ...] = ()
    hazard_failures: tuple[str, ...] = ()
    #: Per-element data of config.scatter_case: {variant: {"err", "ref", "mag"}} (plots only).
    scatter: Any = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document (see the module docstring)."""
        return {
            "header": self.header,
            "records": [clean_json(r.to_dict()) for r in self.records],
            "summaries": [clean_json(t) for t in self.summaries],
            "throughput": [clean_json(t) for t in self.throughput],
            "violations": list(self.violations),
            "hazard_failures": list(self.hazard_failures),
            "c_sweep": [clean_json(r.to_dict()) for r in self.c_sweep],
        }


def make_header(config: ReportConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """The report header: tool, versions, seeds, reference precision, command."""
    libs: dict[str, str | None] = {}
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
            "certified_ulp_fp32": reference_ulp(config.policy),
            "note": "certified fast oracle; elements whose bound exceeds 1e-3 FP32 ULP are "
            "recomputed with mpmath; outputs correctly rounded to float64"
            if reference_ulp(config.policy) == AUTO_ULP_FP32
            else "certified fast oracle; elements whose bound exceeds one FP64 ULP "
            "(certified_ulp_fp32 FP32 ULP) are recomputed with mpmath; the bound check adds "
            "that certificate to every bound",
        },
        "policy": config.policy,
        "units": "cond_err_*, bound_cond_*, lse_err_max: u_fp32 = 2**-24 (of sum_k p_ik |v_kj|"
        " for outputs, relative for the softmax denominator); row_rel_*, rel_fro: relative; "
        "bf16_out_max_ulp: BF16 ULPs of the output as written; *_ulp_*: ULPs at the reference",
        "intervals": "two-sided 95 % Student t intervals over seeds (n - 1 dof, "
        "scipy.stats.t); ratios to fa_fp32 paired by seed, on log ratios (geometric mean)",
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
    if jobs > 1 and scheduler is None:
        # the worker processes fork from this one: scipy.stats (the metrics' sign test; the
        # summaries below import it anyway) is imported once here instead of once in each
        import scipy.stats  # noqa: F401

    cases = expand_grid(
        head_dims=config.head_dims,
        kv_lens=config.kv_lens,
        workloads=config.workloads,
        seeds=config.seeds,
        rows=config.rows,
        block_n=config.block_n,
        c=config.c,
        policy=config.policy,
        group_rows=config.group_rows,
        splits=config.splits,
        combine=config.combine,
    )
    cases += [
        case_from_file(path, block_n=config.block_n, c=config.c, policy=config.policy)
        for path in config.inputs
    ]
    records = run_grid(cases, variants, jobs=jobs, scheduler=scheduler, progress=progress)
    rows = throughput_rows(variants, records) if throughput else ()
    sweep, trace, scatter = (
        _plot_measurements(config, jobs=jobs) if config.plots else ((), None, None)
    )
    return Report(
        header=make_header(config, argv),
        records=tuple(records),
        throughput=tuple(rows),
        violations=tuple(violations(records)),
        c_sweep=tuple(sweep),
        trace=trace,
        summaries=tuple(summarize(records)),
        hazard_failures=tuple(hazard_failures(records)),
        scatter=scatter,
    )


#: Points kept per variant in the scatter data (a seeded subsample beyond that).
_SCATTER_POINTS = 20000


def _sweep_seed(case: Case, cs: tuple[float, ...]) -> list[Record]:
    """One seed of the compensation sweep: ``amla`` at every c, then the two references
    (one workload and one certified reference for all of them)."""
    return evaluate_case(case, ["amla"], cs=cs, also=["amla_nocomp", "fa_fp32"])


def _plot_measurements(
    config: ReportConfig, *, jobs: int = 1
) -> tuple[list[Record], Any, dict[str, Any]]:
    """The plots' own measurements: the compensation sweep over seeds (on ``jobs``
    processes), one traced ``amla`` run, and the per-element errors of the scatter case."""
    import dataclasses
    from concurrent.futures import ProcessPoolExecutor

    from amla_numerics import flash, reference
    from amla_numerics.analysis.metrics import magnitude_scale

    cases = [
        dataclasses.replace(config.c_sweep_case, seed=seed, policy=config.policy)
        for seed in config.c_sweep_seeds
    ]
    cs = tuple(config.c_sweep)
    if jobs > 1 and len(cases) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(_sweep_seed, cases, [cs] * len(cases)))
    else:
        parts = [_sweep_seed(case, cs) for case in cases]
    sweep: list[Record] = [r for part in parts for r in part]
    t = config.trace_case
    w = t.make()
    res = flash.attention(
        w.q, w.k, w.v, "amla", scale=w.scale, block_n=t.block_n, trace=True, policy=config.policy
    )
    sc = config.scatter_case
    ws = sc.make()
    ref = np.asarray(reference.attention(ws.q, ws.k, ws.v, ws.scale, mask=ws.mask), np.float64)
    mag = magnitude_scale(ws.q, ws.k, ws.v, ws.scale, mask=ws.mask)
    keep = np.isfinite(ref).ravel()
    idx = np.flatnonzero(keep)
    if idx.size > _SCATTER_POINTS:
        idx = np.sort(np.random.default_rng(0).choice(idx, _SCATTER_POINTS, replace=False))
    scatter: dict[str, Any] = {"case": asdict(sc)}
    for variant in ("fa_fp32", "amla"):
        out = flash.attention(
            ws.q,
            ws.k,
            ws.v,
            variant,
            scale=ws.scale,
            block_n=sc.block_n,
            mask=ws.mask,
            policy=config.policy,
        ).out
        with np.errstate(invalid="ignore"):
            err = np.abs(np.asarray(out, np.float64) - ref).ravel()[idx]
        scatter[variant] = {"err": err, "ref": np.abs(ref).ravel()[idx], "mag": mag.ravel()[idx]}
    return sweep, res.trace, scatter


def violations(records: Sequence[Record]) -> list[str]:
    """Records with a covered element above its deterministic bound or not finite.

    Only the elements an integer-add garbage class touched are exempt (counted in
    ``n_uncovered``); never a record as a whole.
    """
    out = []
    for r in records:
        if r.n_violations:
            out.append(
                f"{r.variant} d={r.head_dim} N={r.kv_len} {r.workload} seed={r.seed}: "
                f"{r.n_violations} covered element(s) above the bound or not finite, "
                f"measured/bound = {r.bound_ratio:.3g}"
            )
    return out


def hazard_failures(records: Sequence[Record]) -> list[str]:
    """Records whose hazards left wrong values (every class but ``clamp``; see
    :attr:`~amla_numerics.analysis.grid.Record.garbage_hazards`): ``--fail-on-hazard``."""
    out = []
    for r in records:
        if r.garbage_hazards:
            counts = ", ".join(f"{k}={v}" for k, v in r.hazards.items() if v and k != "clamp")
            out.append(
                f"{r.variant} d={r.head_dim} N={r.kv_len} {r.workload} seed={r.seed}: {counts}"
            )
    return out


def summarize(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One summary per (head dim, KV length, splits, variant, workload) over its seeds.

    Means and 95 % t intervals of ``rel_fro``, ``cond_err_median`` and ``cond_err_max``,
    the worst ``cond_err_max`` and bound, and the ratios to ``fa_fp32`` paired by seed (when
    ``fa_fp32`` was measured on the same seeds).
    """
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault((r.head_dim, r.kv_len, r.splits, r.variant, r.workload), []).append(r)
    out = []
    for (d, n, splits, variant, workload), recs in groups.items():
        recs = sorted(recs, key=lambda r: r.seed)
        fro_m, fro_ci = mean_ci95([r.metrics.rel_fro for r in recs])
        med_m, med_ci = mean_ci95([r.metrics.cond_err_median for r in recs])
        max_m, max_ci = mean_ci95([r.metrics.cond_err_max for r in recs])
        hz: dict[str, int] = {}
        for r in recs:
            for k, v in r.hazards.items():
                hz[k] = hz.get(k, 0) + v
        row: dict[str, Any] = {
            "head_dim": d,
            "kv_len": n,
            "splits": splits,
            "variant": variant,
            "workload": workload,
            "seeds": [r.seed for r in recs],
            "n_seeds": len(recs),
            "rel_fro_mean": fro_m,
            "rel_fro_ci95": fro_ci,
            "cond_err_median_mean": med_m,
            "cond_err_median_ci95": med_ci,
            "cond_err_max_mean": max_m,
            "cond_err_max_ci95": max_ci,
            "cond_err_max_worst": max(r.metrics.cond_err_max for r in recs),
            "bf16_out_incorrect_frac_mean": float(
                np.mean([r.metrics.bf16_out_incorrect_frac for r in recs])
            ),
            "bound_cond_max_worst": max(r.bound_cond_max for r in recs),
            "bound_ratio_max": max(r.bound_ratio for r in recs),
            "n_violations": sum(r.n_violations for r in recs),
            "hazards": hz,
        }
        base = {r.seed: r for r in groups.get((d, n, splits, "fa_fp32", workload), [])}
        pairs = [(r, base[r.seed]) for r in recs if r.seed in base]
        for key in ("rel_fro", "cond_err_median"):
            if pairs:
                ratio, ci = paired_ratio_ci95(
                    [getattr(a.metrics, key) for a, _ in pairs],
                    [getattr(b.metrics, key) for _, b in pairs],
                )
            else:
                ratio, ci = math.nan, [math.nan, math.nan]
            row[f"{key}_ratio_fa_fp32"] = ratio
            row[f"{key}_ratio_fa_fp32_ci95"] = ci
        out.append(row)
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
        )  # nominal only: bounds over the parameter box take minutes (docs/pipeline.md)
        row = {"variant": variant, **res.to_dict()}
        row["rescale_prob"] = prob if variant == "lazy" else None
        rows.append(row)
    return rows


def clean_json(d: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf -> None (also inside lists), so the JSON is strict."""
    return {k: _clean(v) for k, v in d.items()}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return clean_json(v)
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v
