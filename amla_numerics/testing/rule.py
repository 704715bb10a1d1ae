"""The default verdict: a kernel's error against the error its declared schedule makes.

A kernel is judged on the same inputs against the emulated output of the schedule it
declares (:func:`amla_numerics.flash.attention` with the kernel's variant, policy, block
length and splits; by default :data:`DEFAULT_SCHEDULE`, FP32-rescale FlashAttention with
BF16 P), with both errors on the condition-aware scale ``e = |out - ref| / (sum_k p_ik
|v_kj|) / 2**-24`` (:mod:`amla_numerics.analysis.metrics`). It passes when

- **max rule**: every element ``e_ij <= MAX_FACTOR * max(e_sched) + A_ij``, where
  ``e_sched`` is the emulated schedule's error before its output cast and ``A_ij`` is one
  ULP of the output dtype at ``ref_ij`` plus ``FP32_ROUNDINGS`` FP32 roundings of
  ``ref_ij``, on the same scale (the kernel's own output rounding, one double rounding, and
  a final normalisation done in another order). The figure reported is ``max_ratio =
  max_ij e_ij / limit_ij``.
- **RMS rule**: ``rms(e) <= RMS_FACTOR * rms(e_sched_out) + rms(FP32_ROUNDINGS u_fp32
  |ref| / mag)``, with the schedule's output cast to the kernel's output dtype (round to
  nearest even), so both carry one output rounding; the second term keeps a schedule that
  is exact on some case (a single dominant key) from demanding exactness. Reported as
  ``rms_ratio``.
- **ceiling**: every element within the schedule's deterministic a priori bound plus that
  ULP (``bound_ratio``, over the elements no integer-add garbage of the schedule touched).
- **lse** (whenever the kernel wrote one): ``|lse_i - lse_ref_i| <= MAX_FACTOR *
  max|lse_sched - lse_ref| + LSE_ULPS * ulp(lse_ref_i)`` in the lse's own dtype
  (``lse_ratio``).
- **degenerate output**: an all-zero, constant or non-finite output fails outright.

Why these constants: ``MAX_FACTOR = 2`` is FlashAttention's own test rule (``<= 2 x`` a
same-precision implementation's max error, plus rounding noise) and CANN's max-relative-error
ratio; the max of a few thousand elements is an order statistic that moves by tens of
percent between equally correct schedules. ``RMS_FACTOR = 1.5``: the RMS is an average over
every element, so equally correct schedules (other block sizes, KV order, exp in float64,
a two-pass softmax) agree within a few percent (``experiments/verdict_zoo.py`` prints the
measured ratios), while the smallest accuracy bugs the zoo holds (AMLA without
compensation, O accumulated in BF16) cost at least 2.3 x on some golden case.
``LSE_ULPS = 4``: the lse is a sum of a max and a logarithm, each rounded once, from a row
sum whose relative error is a few ULPs. A kernel that is *deliberately* less accurate than
its declared schedule declares the schedule it implements, or loosens ``max_factor`` /
``rms_factor`` (``compare --max-factor/--rms-factor``).

Examples
--------
>>> import numpy as np
>>> ref = np.array([[0.5, -0.25]]); mag = np.ones((1, 2)); sched = ref + 2**-24
>>> r = schedule_rule(np.float32(ref), ref, mag, sched)
>>> r.passed, r.reasons
(True, ())
>>> bad = schedule_rule(np.zeros((1, 2), np.float32), ref, mag, sched)
>>> bad.passed, bad.degenerate
(False, 'every output element is 0 while the reference is not')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from amla_numerics.analysis.metrics import U_FP32, condition_aware
from amla_numerics.formats import get_format
from amla_numerics.rounding import round_to
from amla_numerics.ulp import ulp

__all__ = [
    "DEFAULT_SCHEDULE",
    "FP32_ROUNDINGS",
    "LSE_ULPS",
    "MAX_FACTOR",
    "RMS_FACTOR",
    "RULE_METRICS",
    "RuleResult",
    "schedule_rule",
]

#: The schedule a dump is judged against when none is declared.
DEFAULT_SCHEDULE: str = "fa_fp32"
#: Max rule: the kernel's worst element within this multiple of the schedule's worst.
MAX_FACTOR: float = 2.0
#: RMS rule: the kernel's RMS within this multiple of the schedule's RMS.
RMS_FACTOR: float = 1.5
#: FP32 roundings of the output value allowed on top of the schedule's error.
FP32_ROUNDINGS: float = 2.0
#: lse rule: rounding allowance in ULPs of the lse's dtype at the reference lse.
LSE_ULPS: float = 4.0
#: The rule's figures (each passes at <= 1; ``degenerate`` at <= 0).
RULE_METRICS: tuple[str, ...] = ("max_ratio", "rms_ratio", "bound_ratio", "lse_ratio")


@dataclass(frozen=True)
class RuleResult:
    """The default rule's figures (module docstring); a NaN figure was not applicable."""

    schedule: str
    max_factor: float
    rms_factor: float
    max_ratio: float
    rms_ratio: float
    bound_ratio: float
    lse_ratio: float
    cond_err_rms: float
    sched_cond_err_max: float
    sched_cond_err_rms: float
    degenerate: str = ""
    worst_index: tuple[int, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """One sentence per broken rule (empty when the kernel passes); a degenerate output
        gets its one sentence only."""
        if self.degenerate:
            return (self.degenerate,)
        out = []
        if not _ok(self.max_ratio):
            out.append(
                f"an element's error is {self.max_ratio:.3g} x its limit ({self.max_factor:g} x "
                f"the {self.schedule} schedule's worst + 1 output ULP + 2 FP32 roundings) at "
                f"{list(self.worst_index)}"
            )
        if not _ok(self.rms_ratio):
            out.append(
                f"RMS error {self.cond_err_rms:.4g} is {self.rms_ratio:.3g} x its limit "
                f"({self.rms_factor:g} x the {self.schedule} schedule's "
                f"{self.sched_cond_err_rms:.4g} + 2 FP32 roundings)"
            )
        if not math.isnan(self.bound_ratio) and not _ok(self.bound_ratio):
            out.append(
                f"an element exceeds the {self.schedule} a priori bound "
                f"({self.bound_ratio:.3g} x bound + 1 output ULP + 2 FP32 roundings)"
            )
        if not math.isnan(self.lse_ratio) and not _ok(self.lse_ratio):
            out.append(f"the lse error is {self.lse_ratio:.3g} x its limit")
        return tuple(out)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def values(self) -> dict[str, float]:
        """``{"schedule_" + figure: measured}`` for the budgets' check (a bound or lse figure
        that does not apply, NaN, is left out; a NaN max or RMS figure fails)."""
        d = {
            "schedule_max_ratio": self.max_ratio,
            "schedule_rms_ratio": self.rms_ratio,
            "schedule_bound_ratio": self.bound_ratio,
            "lse_ratio": self.lse_ratio,
        }
        d = {
            k: v
            for k, v in d.items()
            if not (math.isnan(v) and k in ("schedule_bound_ratio", "lse_ratio"))
        }
        d["degenerate"] = 1.0 if self.degenerate else 0.0
        return d

    def limits(self) -> dict[str, float]:
        """The limits :meth:`values` is checked against."""
        return {k: (0.0 if k == "degenerate" else 1.0) for k in self.values()}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schedule": self.schedule,
            "max_factor": self.max_factor,
            "rms_factor": self.rms_factor,
        }
        for k in (
            "max_ratio",
            "rms_ratio",
            "bound_ratio",
            "lse_ratio",
            "cond_err_rms",
            "sched_cond_err_max",
            "sched_cond_err_rms",
        ):
            v = float(getattr(self, k))
            d[k] = v if math.isfinite(v) else str(v)
        d["degenerate"] = self.degenerate
        d["passed"] = self.passed
        d["reasons"] = list(self.reasons)
        return d


def _ok(x: float) -> bool:
    return bool(x <= 1.0)  # NaN never passes


def _cond(y: np.ndarray, ref: np.ndarray, mag: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        c = condition_aware(np.abs(y - ref), mag)
    return np.where(np.isfinite(y), c, np.inf)


def _degenerate(y: np.ndarray, ref: np.ndarray, covered: np.ndarray) -> str:
    n = int(np.count_nonzero(covered))
    if not n:
        return ""
    yc, rc = y[covered], ref[covered]
    bad = int(np.count_nonzero(~np.isfinite(yc)))
    if bad:
        return f"{bad} of {n} output elements are NaN or inf where the reference is finite"
    if not np.any(yc) and np.any(rc):
        return "every output element is 0 while the reference is not"
    if yc.size > 1 and np.all(yc == yc[0]) and np.ptp(rc) > 0:
        return (
            f"every output element equals {float(yc[0])!r} while the reference ranges over "
            f"[{float(rc.min()):.6g}, {float(rc.max()):.6g}]"
        )
    return ""


def schedule_rule(
    out: Any,
    ref: np.ndarray,
    mag: np.ndarray,
    sched: np.ndarray,
    *,
    schedule: str = DEFAULT_SCHEDULE,
    lse: Any = None,
    lse_ref: np.ndarray | None = None,
    sched_lse: np.ndarray | None = None,
    bound: np.ndarray | None = None,
    covered: np.ndarray | None = None,
    max_factor: float = MAX_FACTOR,
    rms_factor: float = RMS_FACTOR,
) -> RuleResult:
    """Judge ``out`` against the emulated schedule's output ``sched`` (module docstring).

    Parameters
    ----------
    out : array_like
        The kernel's output in its own dtype (any float format the toolkit knows).
    ref, mag : numpy.ndarray
        The float64 reference (NaN on fully masked rows) and ``sum_k p_ik |v_kj|``.
    sched : numpy.ndarray
        The emulated schedule's output before any output cast (FP32 or wider).
    schedule : str
        Its name (for the reasons).
    lse, lse_ref, sched_lse : array_like, optional
        The kernel's lse (judged when given), the reference's and the schedule's.
    bound : numpy.ndarray, optional
        The schedule's elementwise absolute a priori bound (the ceiling).
    covered : numpy.ndarray of bool, optional
        The elements the bound covers (default: every finite reference). The schedule's own
        garbage (a hazard of its arithmetic: non-finite, or outside ``covered`` when that
        leaves at least half of the elements) sets no limit.
    max_factor, rms_factor : float
        The rule's constants (:data:`MAX_FACTOR`, :data:`RMS_FACTOR`).

    Returns
    -------
    RuleResult
    """
    for name, f in (("max_factor", max_factor), ("rms_factor", rms_factor)):
        if isinstance(f, bool) or not isinstance(f, int | float) or not f >= 1.0:
            raise ValueError(f"argument {name!r} must be a number >= 1, got {f!r}")
    o = np.asarray(out)
    fmt = get_format(o.dtype, "out")
    y = o.astype(np.float64)
    r = np.asarray(ref, np.float64)
    live = np.isfinite(r)
    r0 = np.where(live, r, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        work = np.where(mag > 0, FP32_ROUNDINGS * np.abs(r0) / mag, 0.0)
        allow = np.where(mag > 0, ulp(r0, fmt) / mag / U_FP32, 0.0) + work
    s_max, s_rms = _schedule_errors(sched, r, mag, fmt, covered)
    e = _cond(y, r, mag)
    max_ratio, worst = _max_rule(e, live, max_factor * s_max, allow)
    rms_ratio, k_rms = _rms_rule(e, live, rms_factor * s_rms, work)
    bound_ratio = math.nan
    if bound is not None:
        cov = live if covered is None else (np.asarray(covered, bool) & live)
        bound_ratio = _bound_ratio(y, r, np.asarray(bound, np.float64), cov, fmt)
    lse_ratio = math.nan
    if lse is not None and lse_ref is not None:
        lse_ratio = _lse_ratio(lse, lse_ref, sched_lse, max_factor)
    return RuleResult(
        schedule=schedule,
        max_factor=float(max_factor),
        rms_factor=float(rms_factor),
        max_ratio=max_ratio,
        rms_ratio=rms_ratio,
        bound_ratio=bound_ratio,
        lse_ratio=lse_ratio,
        cond_err_rms=k_rms,
        sched_cond_err_max=s_max,
        sched_cond_err_rms=s_rms,
        degenerate=_degenerate(y, r, live),
        worst_index=worst,
    )


def _schedule_errors(
    sched: Any, r: np.ndarray, mag: np.ndarray, fmt: Any, covered: np.ndarray | None
) -> tuple[float, float]:
    """The schedule's worst error before its output cast and its RMS error after a cast to
    the kernel's output format ``fmt``, over its finite elements. Its own garbage (a hazard
    of its arithmetic: non-finite, or outside ``covered`` when that leaves at least half of
    the elements) sets no limit."""
    s = np.asarray(sched).astype(np.float64)
    e_s = _cond(s, r, mag)
    sched_ok = np.isfinite(r) & np.isfinite(s) & np.isfinite(e_s)
    if covered is not None:
        cov = sched_ok & np.asarray(covered, bool)
        if 2 * int(np.count_nonzero(cov)) >= int(np.count_nonzero(sched_ok)):
            sched_ok = cov
    e_s_live = e_s[sched_ok]
    s_max = float(np.max(e_s_live)) if e_s_live.size else 0.0
    if fmt.name == "fp64":
        s_out = s
    elif fmt.name == "fp32":
        s_out = s.astype(np.float32).astype(np.float64)
    else:
        s_out = np.asarray(round_to(s, fmt), np.float64)
    e_so = _cond(s_out, r, mag)[sched_ok]
    s_rms = float(np.sqrt(np.mean(e_so**2))) if e_so.size else 0.0
    return s_max, s_rms


def _max_rule(
    e: np.ndarray, live: np.ndarray, sched_limit: float, allow: np.ndarray
) -> tuple[float, tuple[int, ...]]:
    """The max rule: the largest ``e / (sched_limit + allow)`` over the live elements, and
    where it is."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        limit = sched_limit + allow
        ratio = np.where(e == 0, 0.0, e / limit)
    ratio = np.where(live, ratio, -1.0)
    max_ratio = float(np.max(ratio)) if live.any() else 0.0
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
    return max_ratio, worst


def _rms_rule(
    e: np.ndarray, live: np.ndarray, sched_limit: float, work: np.ndarray
) -> tuple[float, float]:
    """The RMS rule: the kernel's RMS error over the live elements against ``sched_limit``
    plus the RMS of the FP32 roundings ``work``; returns ``(ratio, the kernel's RMS)``."""
    e_live = e[live]
    k_rms = float(np.sqrt(np.mean(e_live**2))) if e_live.size else 0.0
    w_rms = float(np.sqrt(np.mean(work[live] ** 2))) if live.any() else 0.0
    rms_limit = sched_limit + w_rms
    if k_rms == 0:
        return 0.0, k_rms
    if rms_limit == 0:
        return math.inf, k_rms
    return k_rms / rms_limit, k_rms


def _bound_ratio(y: np.ndarray, r: np.ndarray, b: np.ndarray, cov: np.ndarray, fmt: Any) -> float:
    """The ceiling: the largest ``|y - r|`` over the bound ``b`` plus one output ULP and
    the FP32 roundings, over the covered elements (NaN when none is)."""
    if not cov.any():
        return math.nan
    r0 = np.where(np.isfinite(r), r, 0.0)
    lim_b = b + ulp(r0, fmt) + FP32_ROUNDINGS * U_FP32 * np.abs(r0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = np.abs(y - r)
        br = np.where(d == 0, 0.0, d / lim_b)
    br = np.where(np.isfinite(y), br, np.inf)
    return float(np.max(br[cov]))


def _lse_ratio(lse: Any, lse_ref: Any, sched_lse: Any, max_factor: float) -> float:
    """The lse rule's figure in the lse's own dtype (NaN when no reference lse is finite)."""
    la = np.asarray(lse)
    lfmt = get_format(la.dtype, "lse")
    lk = la.astype(np.float64)
    lr = np.asarray(lse_ref, np.float64)
    lok = np.isfinite(lr)
    if not lok.any():
        return math.nan
    s_err = 0.0
    if sched_lse is not None:
        ls = np.asarray(sched_lse, np.float64)
        s_err = float(np.nanmax(np.abs(ls - lr)[lok]))
    lim = max_factor * s_err + LSE_ULPS * ulp(np.where(lok, lr, 0.0), lfmt)
    with np.errstate(invalid="ignore"):
        d = np.abs(lk - lr)
        lr_ratio = np.where(d == 0, 0.0, d / lim)
    lr_ratio = np.where(np.isfinite(lk), lr_ratio, np.inf)
    return float(np.max(lr_ratio[lok]))
