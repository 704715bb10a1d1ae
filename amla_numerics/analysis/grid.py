"""The measurement grid: (head dim, KV length, workload, seed) cases, every variant in each.

One case builds its workload once, computes the reference once
(:func:`amla_numerics.reference.attention`, certified ``method="auto"``, with the workload's
mask), the condition-aware scale ``sum_k p_ik |v_kj|``
(:func:`~amla_numerics.analysis.metrics.magnitude_scale`) and the bounds' input statistics,
runs every requested variant through the emulator (:func:`amla_numerics.flash.attention`)
under the case's policy, and turns each output into a :class:`Record`: the error metrics, the
elementwise a priori bound on the same scale, the bound check, the hazard counts and the
rescale probability.

The bound check covers every element whose reference is finite, except exactly the elements
an integer-add garbage class touched (:meth:`amla_numerics.flash.FlashResult.garbage_mask`):
a covered element fails when its error exceeds its bound or it is not finite (FP32 overflow
included). A record is never exempt as a whole.

Cases are independent, so a grid runs serially, on a process pool (``jobs > 1``) or on a
Dask distributed cluster (``scheduler="tcp://..."``); records come back in case order,
identical whatever the executor (every case is a pure function of its fields).

Examples
--------
>>> cases = expand_grid(head_dims=[64], kv_lens=[256], workloads=["random"], seeds=[0],
...                     rows=2, block_n=128)
>>> recs = run_grid(cases, variants=["fa_fp32", "amla"])
>>> [(r.variant, r.head_dim, r.n_violations, r.bound_ratio <= 1) for r in recs]
[('fa_fp32', 64, 0, True), ('amla', 64, 0, True)]
>>> recs[1].metrics.cond_err_max <= recs[1].bound_cond_max
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from amla_numerics.analysis.boundcheck import bound_check
from amla_numerics.analysis.bounds import a_priori_bound, bound_inputs, elementwise_bound
from amla_numerics.analysis.metrics import (
    ErrorMetrics,
    error_metrics,
    magnitude_scale,
    reference_error,
    reference_ulp,
)
from amla_numerics.analysis.workloads import WORKLOADS, Workload, load_workload, make_workload
from amla_numerics.formats import FP32
from amla_numerics.reference import AUTO_ULP_FP32
from amla_numerics.ulp import ulp
from amla_numerics.variants import DEFAULT_C, VARIANTS, check_variant, spec

__all__ = [
    "HAZARD_CLASSES",
    "Case",
    "Record",
    "case_from_file",
    "evaluate_case",
    "expand_grid",
    "run_grid",
]

#: Hazard classes every record counts (the integer add's classes, ``clamp``, FP32 overflow).
HAZARD_CLASSES: tuple[str, ...] = (
    "zero",
    "subnormal",
    "sign_borrow",
    "underflow",
    "overflow",
    "nonfinite",
    "clamp",
)


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
    #: The emulator's precision policy: a preset name (:data:`amla_numerics.flash.PRESETS`).
    policy: str = "ascend"
    #: Rows a vector core decides together for the lazy rescale probability (None: all).
    group_rows: int | None = None
    #: Split-KV: the keys split into this many splits of whole blocks (1: unsplit), merged
    #: by ``combine`` (:mod:`amla_numerics.flash.splitkv`); bounds by
    #: :func:`~amla_numerics.analysis.bounds.split_bound`.
    splits: int = 1
    combine: str = "cann"

    def __post_init__(self) -> None:
        for arg in ("head_dim", "kv_len", "rows", "block_n"):
            value = getattr(self, arg)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        if isinstance(self.splits, bool) or not isinstance(self.splits, int | np.integer):
            raise ValueError(f"splits must be an integer >= 1, got {self.splits!r}")
        if self.splits < 1:
            raise ValueError(f"splits must be an integer >= 1, got {self.splits!r}")
        from amla_numerics.flash.splitkv import check_combine

        check_combine(self.combine)
        if self.path is None and self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; valid: {', '.join(WORKLOADS)}")
        from amla_numerics.flash.policy import PRESETS

        if self.policy not in PRESETS:
            raise ValueError(f"unknown policy {self.policy!r}; valid: {', '.join(PRESETS)}")

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


def case_from_file(
    path: str, *, block_n: int = 512, c: float = DEFAULT_C, policy: str = "ascend"
) -> Case:
    """A case measuring the user's arrays in ``path`` (``.npz`` with q, k, v, optional scale
    and mask)."""
    w = load_workload(path)
    return Case(w.head_dim, w.kv_len, w.name, 0, int(w.q.shape[-2]), block_n, c, str(path), policy)


@dataclass(frozen=True)
class Record:
    """One (case, variant) measurement: a report row.

    Attributes
    ----------
    metrics : ErrorMetrics
        The condition-aware, row, Frobenius, BF16-output and secondary ULP measures.
    bound_cond_max, bound_cond_median : float
        The deterministic elementwise a priori bound divided by ``sum_k p_ik |v_kj|``, in
        ``u_fp32``, max and median over the covered elements: the same scale as
        ``metrics.cond_err_*``, so ``cond_err_max <= bound_cond_max`` whenever the bound
        holds (inf where the bound is genuinely unbounded).
    bound_ratio : float
        Max over the covered elements of ``|out - ref| / bound`` (inf at a covered
        non-finite output; NaN when nothing is covered). Above 1 means a bug or a wrong model.
    prob_bound_ratio : float
        The same against the probabilistic bound (may exceed 1 with small probability).
    bound_ulp_fp32 : float
        Secondary: the deterministic bound in FP32 ULPs at the reference, median element.
    n_covered, n_uncovered, n_violations : int
        Elements the bound check covers (finite reference, no integer-add garbage), the
        elements excluded (garbage), and the covered elements above their bound or not finite.
    hazards : dict[str, int]
        Counts per class of :data:`HAZARD_CLASSES` (``clamp`` and FP32 overflow included).
    rescale_rate : float
        :func:`amla_numerics.flash.rescale_probability` of the run's trace with the case's
        ``group_rows`` (1 for every eager variant; NaN with a single block).
    """

    head_dim: int
    kv_len: int
    variant: str
    workload: str
    seed: int
    rows: int
    block_n: int
    metrics: ErrorMetrics
    bound_cond_max: float
    bound_cond_median: float
    bound_ratio: float
    prob_bound_ratio: float
    bound_ulp_fp32: float = math.nan
    n_covered: int = 0
    n_uncovered: int = 0
    n_violations: int = 0
    hazards: dict[str, int] = field(default_factory=dict)
    rescale_rate: float = 1.0
    c: float = DEFAULT_C
    policy: str = "ascend"
    splits: int = 1
    combine: str = "cann"

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict (the report's record schema)."""
        out = {k: v for k, v in asdict(self).items() if k != "metrics"}
        out.update(self.metrics.to_dict())
        return out

    @property
    def garbage_hazards(self) -> int:
        """Hazard counts that mean wrong values: every class but the informational ``clamp``;
        none for ``amla_guarded``, which repairs what it detects (its FP32 overflow, like
        every variant's, already fails the bound check as a non-finite covered output)."""
        if spec(self.variant).guard:
            return 0
        return int(sum(v for k, v in self.hazards.items() if k != "clamp"))


def expand_grid(
    *,
    head_dims: Iterable[int],
    kv_lens: Iterable[int],
    workloads: Iterable[str],
    seeds: Iterable[int] = (0,),
    rows: int = 16,
    block_n: int = 512,
    c: float = DEFAULT_C,
    policy: str = "ascend",
    group_rows: int | None = None,
    splits: Iterable[int] = (1,),
    combine: str = "cann",
) -> list[Case]:
    """Every combination, in (workload, head dim, KV length, splits, seed) order."""
    return [
        Case(d, n, w, s, rows, block_n, c, None, policy, group_rows, sp, combine)
        for w, d, n, sp, s in itertools.product(workloads, head_dims, kv_lens, splits, seeds)
    ]


def _bound_stats(w: Workload):
    """The bounds' input statistics, with the workload's mask."""
    return bound_inputs(w.q, w.k, w.v, w.scale, mask=w.mask)


def evaluate_case(
    case: Case,
    variants: Sequence[str] = VARIANTS,
    *,
    cs: Sequence[float] | None = None,
    also: Sequence[str] = (),
) -> list[Record]:
    """Measure every variant on one case (a pure function of its arguments).

    The workload, its reference, the magnitude scale and the bounds' input statistics are
    computed once. With ``cs``, every variant is measured once per compensation coefficient
    (records in ``(c, variant)`` order) instead of at ``case.c`` only. The ``also`` variants
    are measured at ``case.c`` after those, on the same reference: the records equal those of
    a separate ``evaluate_case(case, also)``.

    Examples
    --------
    >>> case = Case(64, 256, "random", 0, 2, 128)
    >>> recs = evaluate_case(case, ["amla"], cs=[1.0, 1.5], also=["fa_fp32"])
    >>> [(r.variant, r.c) for r in recs]
    [('amla', 1.0), ('amla', 1.5), ('fa_fp32', 1.5)]
    """
    from amla_numerics import flash, reference  # heavy imports stay out of module import

    variants = [check_variant(v) for v in variants]
    also = [check_variant(v, "also") for v in also]
    w = case.make()
    ref_ulp = reference_ulp(case.policy)  # FP64 policies: a reference within one FP64 ULP
    ref, lse_ref = reference.attention(
        w.q, w.k, w.v, w.scale, mask=w.mask, method="auto", return_lse=True, auto_ulp=ref_ulp
    )
    ref = np.asarray(ref, dtype=np.float64)
    mag = magnitude_scale(w.q, w.k, w.v, w.scale, mask=w.mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = ulp(np.where(np.isfinite(ref), ref, 0.0), FP32)
    stats = _bound_stats(w)  # shared by every variant's bounds
    records = []
    pairs = [(case.c, v) for v in variants] if cs is None else list(itertools.product(cs, variants))
    pairs += [(case.c, v) for v in also]
    # the run's options: the emulator and the split bound read the same ones
    run: dict[str, Any] = dict(
        scale=w.scale,
        mask=w.mask,
        block_n=case.block_n,
        policy=case.policy,
        splits=case.splits,
        combine=case.combine,
    )
    for c, variant in pairs:
        res = flash.attention(w.q, w.k, w.v, variant, trace=True, c=c, **run)
        out = np.asarray(res.out, dtype=np.float64)
        metrics = error_metrics(out, ref, mag=mag, lse=res.lse, lse_ref=lse_ref)
        det, prob = _element_bounds(case, variant, c, w, stats, run)
        covered = np.isfinite(ref) & ~res.garbage_mask()
        if ref_ulp != AUTO_ULP_FP32:  # an FP64 policy: the reference's own error counts
            det = det + reference_error(ref, ref_ulp)
        check = bound_check(out, ref, det, mag=mag, covered=covered)
        records.append(
            Record(
                head_dim=case.head_dim,
                kv_len=case.kv_len,
                variant=variant,
                workload=case.workload,
                seed=case.seed,
                rows=case.rows,
                block_n=case.block_n,
                metrics=metrics,
                bound_cond_max=check.bound_cond_max,
                bound_cond_median=check.bound_cond_median,
                bound_ratio=check.ratio,
                prob_bound_ratio=bound_check(out, ref, prob, mag=mag, covered=covered).ratio,
                bound_ulp_fp32=_median(det[covered] / unit[covered]),
                n_covered=check.n_covered,
                n_uncovered=int(np.count_nonzero(np.isfinite(ref) & ~covered)),
                n_violations=check.violations,
                hazards={k: int(res.hazards.get(k, 0)) for k in HAZARD_CLASSES},
                rescale_rate=_rescale_rate(res.trace, case.group_rows),
                c=float(c),
                policy=case.policy,
                splits=case.splits,
                combine=case.combine,
            )
        )
    return records


def _element_bounds(
    case: Case, variant: str, c: float, w: Workload, stats: Any, run: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic and the probabilistic bound of every output element of one run of
    :func:`evaluate_case` (split runs: the split bound, and no probabilistic one: NaN)."""
    if case.splits > 1:
        from amla_numerics.analysis.bounds import split_bound

        det: np.ndarray = split_bound(variant, w.q, w.k, w.v, c=c, **run)  # type: ignore[assignment]
        return det, np.full(det.shape, np.nan)
    bound = a_priori_bound(
        variant,
        head_dim=case.head_dim,
        kv_len=case.kv_len,
        block_n=case.block_n,
        c=c,
        policy=case.policy,
    )
    det = elementwise_bound(bound, stats, kind="deterministic")
    return det, elementwise_bound(bound, stats, kind="probabilistic")


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


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else math.nan


def _rescale_rate(trace: Any, group_rows: int | None = None) -> float:
    """The rescale probability of the run, by the one definition next to the trace."""
    if trace is None:
        return math.nan
    from amla_numerics.flash import rescale_probability

    return rescale_probability(np.asarray(trace.rescaled, dtype=bool), group_rows)
