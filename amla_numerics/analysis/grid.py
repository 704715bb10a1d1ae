"""The measurement grid: (head dim, KV length, workload, seed) cases, every variant in each.

One case builds its workload once, computes the reference once
(:func:`amla_numerics.reference.attention`, certified ``method="auto"``), runs every
requested variant through the emulator (:func:`amla_numerics.flash.attention`) and turns
each output into a :class:`Record`: the error metrics, the a priori bound and the
measured/bound ratio, the hazard counts and how often the variant rescaled.

Cases are independent, so a grid runs serially, on a process pool (``jobs > 1``) or on a
Dask distributed cluster (``scheduler="tcp://..."``); records come back in case order,
identical whatever the executor (every case is a pure function of its fields).

Examples
--------
>>> cases = expand_grid(head_dims=[64], kv_lens=[256], workloads=["random"], seeds=[0],
...                     rows=2, block_n=128)
>>> recs = run_grid(cases, variants=["fa_fp32", "amla"])
>>> [(r.variant, r.head_dim, r.bound_ratio <= 1) for r in recs]
[('fa_fp32', 64, True), ('amla', 64, True)]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds import a_priori_bound, bound_inputs, elementwise_bound
from amla_numerics.analysis.metrics import ErrorMetrics, error_metrics, magnitude_scale
from amla_numerics.analysis.workloads import WORKLOADS, Workload, load_workload, make_workload
from amla_numerics.formats import FP32
from amla_numerics.ulp import ulp
from amla_numerics.variants import DEFAULT_C, VARIANTS, check_variant

__all__ = ["Case", "Record", "case_from_file", "evaluate_case", "expand_grid", "run_grid"]


@dataclass(frozen=True)
class Case:
    """One point of the grid (all variants are measured on it).

    ``path`` names a user's ``.npz`` (see :func:`~amla_numerics.analysis.workloads.load_workload`)
    instead of a generated workload; use :func:`case_from_file` to build such a case.
    """

    head_dim: int
    kv_len: int
    workload: str
    seed: int = 0
    rows: int = 16
    block_n: int = 512
    c: float = DEFAULT_C
    path: str | None = None

    def __post_init__(self) -> None:
        for arg in ("head_dim", "kv_len", "rows", "block_n"):
            value = getattr(self, arg)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        if self.path is None and self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; valid: {', '.join(WORKLOADS)}")

    def make(self) -> Workload:
        """The case's inputs."""
        if self.path is not None:
            return load_workload(self.path)
        return make_workload(
            self.workload,
            head_dim=self.head_dim,
            kv_len=self.kv_len,
            rows=self.rows,
            seed=self.seed,
        )


def case_from_file(path: str, *, block_n: int = 512, c: float = DEFAULT_C) -> Case:
    """A case measuring the user's arrays in ``path`` (``.npz`` with q, k, v, optional scale)."""
    w = load_workload(path)
    return Case(w.head_dim, w.kv_len, w.name, 0, int(w.q.shape[0]), block_n, c, str(path))


@dataclass(frozen=True)
class Record:
    """One (case, variant) measurement: a report row.

    ``bound_ratio`` is ``max_i err_i / bound_i`` over the finite outputs (the deterministic
    a priori bound, so above 1 means a bug or a wrong model); ``prob_bound_ratio`` the same
    against the probabilistic bound. ``bound_ulp_fp32`` is the deterministic bound in FP32
    ULPs at the median element. ``rescale_rate`` is the fraction of (row, block) steps after
    the first block in which the variant rescaled O (1 for every eager variant).
    """

    head_dim: int
    kv_len: int
    variant: str
    workload: str
    seed: int
    rows: int
    block_n: int
    metrics: ErrorMetrics
    bound_ulp_fp32: float
    bound_ratio: float
    prob_bound_ratio: float
    hazards: dict[str, int] = field(default_factory=dict)
    rescale_rate: float = 1.0
    c: float = DEFAULT_C

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict (the report's record schema)."""
        out = {k: v for k, v in asdict(self).items() if k != "metrics"}
        out.update(self.metrics.to_dict())
        return out


def expand_grid(
    *,
    head_dims: Iterable[int],
    kv_lens: Iterable[int],
    workloads: Iterable[str],
    seeds: Iterable[int] = (0,),
    rows: int = 16,
    block_n: int = 512,
    c: float = DEFAULT_C,
) -> list[Case]:
    """Every combination, in (workload, head dim, KV length, seed) order."""
    return [
        Case(d, n, w, s, rows, block_n, c)
        for w, d, n, s in itertools.product(workloads, head_dims, kv_lens, seeds)
    ]


def evaluate_case(
    case: Case, variants: Sequence[str] = VARIANTS, *, cs: Sequence[float] | None = None
) -> list[Record]:
    """Measure every variant on one case (a pure function of its arguments).

    The workload, its reference and the bounds' input statistics are computed once. With
    ``cs``, every variant is measured once per compensation coefficient (records in
    ``(c, variant)`` order) instead of at ``case.c`` only.
    """
    from amla_numerics import flash, reference  # heavy imports stay out of module import

    variants = [check_variant(v) for v in variants]
    w = case.make()
    ref, lse_ref = reference.attention(w.q, w.k, w.v, w.scale, method="auto", return_lse=True)
    mag = magnitude_scale(w.q, w.k, w.v, w.scale)
    unit = ulp(ref, FP32)
    stats = bound_inputs(w.q, w.k, w.v, w.scale)  # shared by every variant's bounds
    records = []
    pairs = [(case.c, v) for v in variants] if cs is None else itertools.product(cs, variants)
    for c, variant in pairs:
        res = flash.attention(
            w.q, w.k, w.v, variant, scale=w.scale, block_n=case.block_n, trace=True, c=c
        )
        out = np.asarray(res.out, dtype=np.float64)
        bound = a_priori_bound(
            variant, head_dim=case.head_dim, kv_len=case.kv_len, block_n=case.block_n, c=c
        )
        det = elementwise_bound(bound, stats, kind="deterministic")
        prob = elementwise_bound(bound, stats, kind="probabilistic")
        err = np.abs(out - ref)
        finite = np.isfinite(out)
        records.append(
            Record(
                head_dim=case.head_dim,
                kv_len=case.kv_len,
                variant=variant,
                workload=case.workload,
                seed=case.seed,
                rows=case.rows,
                block_n=case.block_n,
                metrics=error_metrics(out, ref, mag=mag, lse=res.lse, lse_ref=lse_ref),
                bound_ulp_fp32=float(np.median(det / unit)),
                bound_ratio=_max_ratio(err[finite], det[finite]),
                prob_bound_ratio=_max_ratio(err[finite], prob[finite]),
                hazards={k: int(v) for k, v in res.hazards.items() if k != "ok"},
                rescale_rate=_rescale_rate(res.trace),
                c=float(c),
            )
        )
    return records


def run_grid(
    cases: Sequence[Case],
    variants: Sequence[str] = VARIANTS,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Record]:
    """Evaluate every case; records in case order, then variant order.

    Parameters
    ----------
    jobs : int
        Worker processes (1: serial in this process).
    scheduler : str, optional
        Address of an existing Dask distributed scheduler; requires the ``dask`` extra.
    progress : callable, optional
        Called as ``progress(done, total)`` after each case.
    """
    variants = [check_variant(v) for v in variants]
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"argument 'jobs' must be an integer >= 1, got {jobs!r}")
    total = len(cases)
    results: list[list[Record]] = []
    if scheduler is not None:
        results = _run_dask(cases, variants, scheduler, progress)
    elif jobs == 1 or total <= 1:
        for i, case in enumerate(cases):
            results.append(evaluate_case(case, variants))
            if progress:
                progress(i + 1, total)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(evaluate_case, case, variants) for case in cases]
            for i, fut in enumerate(futures):
                results.append(fut.result())
                if progress:
                    progress(i + 1, total)
    return [r for case_records in results for r in case_records]


def _run_dask(cases, variants, scheduler, progress) -> list[list[Record]]:
    try:
        from dask.distributed import Client
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise ValueError(
            "--scheduler needs dask.distributed: pip install 'amla-numerics[dask]'"
        ) from None
    try:
        client = Client(scheduler, timeout="10s", set_as_default=False)
    except OSError as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    with client:
        futures = client.map(evaluate_case, cases, variants=variants, pure=True)
        results = []
        for i, fut in enumerate(futures):  # in case order, so progress is monotone
            results.append(fut.result())
            if progress:
                progress(i + 1, len(cases))
        return results


def _max_ratio(err: np.ndarray, bound: np.ndarray) -> float:
    if err.size == 0:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / bound)
    return float(np.max(ratio))


def _rescale_rate(trace: Any) -> float:
    """Fraction of (row, block > 1) steps that rescaled O, from the emulator's trace."""
    if trace is None:
        return float("nan")
    decisions = (
        trace.get("rescaled") if isinstance(trace, dict) else getattr(trace, "rescaled", None)
    )
    if decisions is None:
        return float("nan")
    d = np.asarray(decisions, dtype=bool)
    return float(d[1:].mean()) if d.shape[0] > 1 else 0.0
