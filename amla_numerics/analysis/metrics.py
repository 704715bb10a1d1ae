"""Error metrics of an attention output against its reference, on a condition-aware scale.

The headline measure is the *condition-aware componentwise error*

    cond_err_ij = |out_ij - ref_ij| / (sum_k p_ik |v_kj|) / u_fp32,   u_fp32 = 2**-24,

with ``p`` the exact softmax weights (:func:`magnitude_scale`). The denominator is what a
backward-stable attention kernel's error scales with: every rounding of a weight ``p_ik``
(or of ``v_kj``) perturbs ``out_ij`` by at most a few ``u |p_ik v_kj|``, so a kernel whose
every weight is correct to ``k`` units has ``cond_err <= k`` whatever cancellation happens
in ``sum_k p_ik v_kj``. An error in ULPs of the reference value itself divides by
``|ref_ij|`` instead, which is tiny where the sum cancels (``|ref| ~ 1e-8`` among outputs of
``1e-2``): there the ULP error explodes to 1e8-1e10 although the kernel did nothing wrong.
Those ULP-at-reference figures are kept as secondary fields.

Beside it: the per-row normwise relative error (``row_rel``), the relative Frobenius error,
the output as a BF16 kernel writes it (ULP distance to the correctly rounded BF16 reference,
and the share not correctly rounded), and the log-sum-exp error.

Non-finite outputs where the reference is finite are counted in ``n_nonfinite`` and are
*infinite* errors in every primary measure (condition-aware, row, Frobenius, BF16 view): a
statistic that skips garbage would hide it. Elements whose reference is not finite (rows with
every key masked: NaN) are left out of everything and counted in ``n_ref_nonfinite``. The
secondary ULP-at-reference fields are over the finite outputs only (as before).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> q, k, v = rng.standard_normal((2, 4)), rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
>>> mag = magnitude_scale(q, k, v)
>>> mag.shape, bool(np.all(mag > 0))
((2, 3), True)
>>> ref = np.array([[1.0, 2.0, -3.0], [4.0, 0.5, 1.0]])
>>> out = np.float32(ref) + np.float32([[0, 2**-22, 0], [-2**-21, 0, 0]])
>>> m = error_metrics(out, ref, mag=np.ones((2, 3)))
>>> m.cond_err_max, m.worst_index, m.max_ulp_fp32, m.n_nonfinite
(8.0, (1, 0), 1.0, 0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from amla_numerics.flash.policy import get_policy
from amla_numerics.formats import BF16, FP32, Format, get_format
from amla_numerics.reference.dispatch import AUTO_ULP_FP32, AUTO_ULP_FP64
from amla_numerics.rounding import MODES, round_to
from amla_numerics.ulp import signed_ulp_error, ulp, ulp_distance

__all__ = [
    "COND_EDGES",
    "HIST_EDGES",
    "LIMIT_METRICS",
    "PERCENTILES",
    "U_FP32",
    "ErrorMetrics",
    "condition_aware",
    "error_metrics",
    "magnitude_scale",
    "reference_error",
    "reference_ulp",
]

#: The unit of every condition-aware figure: FP32's unit roundoff.
U_FP32: float = 2.0**-24


#: The fields of a record or a comparison that a limit (an assertion's ``max_*`` argument,
#: a budget) may name; all are "smaller is better" and a limit is an inclusive maximum.
LIMIT_METRICS: tuple[str, ...] = (
    "cond_err_max",
    "cond_err_p999",
    "cond_err_median",
    "row_rel_max",
    "row_rel_median",
    "rel_fro",
    "bf16_out_max_ulp",
    "bf16_out_incorrect_frac",
    "bf16_out_rowmax_ulp_max",
    "bf16_out_rowmax_ulp_p999",
    "lse_err_max",
    "max_ulp_fp32",
    "median_ulp_fp32",
    "max_ulp_bf16",
    "bound_ratio",
)

#: Percentiles reported for ULP errors (100 is the max).
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9, 100.0)

#: Fixed FP32-ULP histogram edges shared by every record: [0, 2**-8), then one bin per
#: power of two up to 2**24 (a BF16-sized error is 2**16 FP32 ULPs), then [2**24, inf).
HIST_EDGES: tuple[float, ...] = (0.0, *(2.0**e for e in range(-8, 25)), float("inf"))

#: Histogram edges of the condition-aware error (units of u_fp32): [0, 2**-12), one bin per
#: power of two up to 2**20, then [2**20, inf] (non-finite outputs land in the last bin).
COND_EDGES: tuple[float, ...] = (0.0, *(2.0**e for e in range(-12, 21)), float("inf"))


def condition_aware(x: Any, mag: Any) -> np.ndarray:
    """``x / mag`` in units of ``u_fp32 = 2**-24``, with ``0 / 0 = 0`` and ``x / 0 = inf``.

    The scale of every headline error and bound: ``mag = sum_k p_k |v_k|`` is what the
    rounding-error analysis bounds the error by, so the ratio does not explode where the
    output cancels to zero. ``x`` is an absolute error (``|out - ref|``) or a bound.

    Examples
    --------
    >>> condition_aware([0.0, 2.0**-24, 1.0], [0.0, 1.0, 0.0]).tolist()
    [0.0, 1.0, inf]
    """
    a = np.asarray(x, dtype=np.float64)
    m = np.asarray(mag, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(a == 0, 0.0, a / m / U_FP32)


def magnitude_scale(
    q: Any, k: Any, v: Any, scale: float | None = None, *, mask: Any = None
) -> np.ndarray:
    """``sum_k p_ik |v_kj|``: the denominator of the condition-aware error, in float64.

    Parameters
    ----------
    q, k, v : array_like
        (..., M, Dk), (..., N, Dk), (..., N, Dv), leading dimensions broadcast as in
        :func:`amla_numerics.reference.attention`; any real dtype (taken exactly).
    scale : float, optional
        Softmax scale, default ``1/sqrt(Dk)``.
    mask : array_like of bool or float, optional
        Broadcastable to (..., M, N): True (or an additive 0.0 / finite bias) attends,
        False (or -inf) masks, as the reference and the emulator read it.

    Returns
    -------
    numpy.ndarray
        (..., M, Dv) float64, ``>= 0``; 0 on rows whose every key is masked.

    Notes
    -----
    ``p`` are the exact softmax weights evaluated in float64: scores ``scale q k^T`` as
    float64 products (absolute error about ``Dk 2**-53 scale |q||k|``), ``exp(s - max s)``
    and the row normalisation in float64. Each weight's relative error is below
    ``(Dk + 4) 2**-53 (1 + max scale|q||k|)``, about 1e-13 for unit-variance data at
    ``Dk = 576``: far below the 1e-6 relative accuracy a denominator of an error measure
    needs. The weighted sum of non-negative terms adds ``N 2**-53`` relative at most.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.zeros((1, 2)); k = np.zeros((2, 2)); v = np.array([[1.0], [-3.0]])
    >>> magnitude_scale(q, k, v)  # equal weights 1/2: (1 + 3) / 2
    array([[2.]])
    >>> magnitude_scale(q, k, v, mask=np.array([[True, False]]))
    array([[1.]])
    """
    q64 = _real_array(q, "q")
    k64 = _real_array(k, "k")
    v64 = _real_array(v, "v")
    if q64.ndim < 2 or k64.ndim < 2 or v64.ndim < 2:
        raise ValueError("arguments 'q', 'k', 'v' must have at least 2 dimensions")
    if q64.shape[-1] != k64.shape[-1]:
        raise ValueError(
            f"arguments 'q' {q64.shape} and 'k' {k64.shape} differ in their last dimension"
        )
    if k64.shape[-2] != v64.shape[-2]:
        raise ValueError(f"arguments 'k' {k64.shape} and 'v' {v64.shape} differ in key count")
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    if not math.isfinite(sc):
        raise ValueError(f"argument 'scale' must be finite, got {scale!r}")
    s = sc * (q64 @ np.swapaxes(k64, -1, -2))
    if mask is not None:
        ma = np.asarray(mask)
        if ma.dtype == bool:
            s = np.where(ma, s, -np.inf)
        elif ma.dtype.kind in "fiu":
            if np.any(np.isnan(ma)) or np.any(np.isposinf(ma)):
                raise ValueError("argument 'mask' contains NaN or +inf (only -inf is allowed)")
            s = s + ma.astype(np.float64)
        else:
            raise TypeError(f"argument 'mask' must be boolean or float, got dtype {ma.dtype}")
    with np.errstate(invalid="ignore"):
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)  # fully masked rows: every weight 0
        e = np.exp(s - m)
    tot = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = (e @ np.abs(v64)) / tot
    return np.where(tot > 0, mag, 0.0)


@dataclass(frozen=True)
class ErrorMetrics:
    """Summary of an output's error against a float64 reference.

    Primary fields (see the module docstring): ``cond_err_*`` in units of
    ``u_fp32 = 2**-24`` of ``sum_k p_ik |v_kj|`` (``cond_err_mean_signed``: signed, over the
    finite outputs); ``row_rel_*`` per-row ``||out_i - ref_i||_2 / ||ref_i||_2``; ``rel_fro``;
    ``bf16_out_max_ulp`` (BF16 ULP distance of the output cast as the kernel writes it to the
    correctly rounded reference) and ``bf16_out_incorrect_frac``; ``lse_err_max`` =
    ``max |lse - lse_ref| / u_fp32``, the relative error of the softmax denominator
    ``exp(lse)`` in units of ``u_fp32`` (NaN without an lse); ``worst_index``, the index
    (in ``out``'s shape) of ``cond_err_max``; ``scale_bias``, the multiplicative bias
    ``<out, ref> / <ref, ref> - 1`` in ``u_fp32`` over the finite outputs (the least-squares
    scale of the output against the reference: a kernel that systematically over- or
    under-scales O shows here, whatever the signs of V; NaN when ``ref`` is all zero).

    Secondary fields: errors in ULPs of each element's own reference value (``*_ulp_fp32``,
    ``*_ulp_bf16``), the mean signed FP32-ULP error with a two-sided sign test
    (``sign_test_p``), max abs, RMSE, cosine, relative L1 and the histograms over
    :data:`HIST_EDGES` (``hist_ulp_fp32``) and :data:`COND_EDGES` (``hist_cond_err``).

    The output-format view on a scale that does not explode near zero (the format is
    ``out_format``, BF16 by default): ``bf16_out_cr_frac`` (share correctly rounded),
    ``bf16_out_faithful_frac`` (share within 1 ULP of the correctly rounded value), and
    ``bf16_out_rowmax_ulp_max`` / ``_p999``: ``|cast(out) - ref|`` in ULPs of the format at
    the row's largest ``|ref|`` (a correctly rounded output is at most half of one there).
    ``bf16_out_max_ulp`` (ULPs at each element's own value) is the secondary figure.
    """

    n: int
    n_nonfinite: int
    cond_err_max: float
    cond_err_p999: float
    cond_err_median: float
    cond_err_mean_signed: float
    row_rel_max: float
    row_rel_median: float
    rel_fro: float
    bf16_out_max_ulp: float
    bf16_out_incorrect_frac: float
    lse_err_max: float
    worst_index: tuple[int, ...]
    scale_bias: float
    median_ulp_fp32: float
    p90_ulp_fp32: float
    p99_ulp_fp32: float
    p999_ulp_fp32: float
    max_ulp_fp32: float
    median_ulp_bf16: float
    p999_ulp_bf16: float
    max_ulp_bf16: float
    mean_signed_ulp_fp32: float
    sign_test_p: float
    max_abs: float
    rmse: float
    cosine: float
    rel_l1: float
    n_ref_nonfinite: int = 0
    hist_ulp_fp32: tuple[int, ...] = ()
    hist_cond_err: tuple[int, ...] = ()
    bf16_out_cr_frac: float = math.nan
    bf16_out_faithful_frac: float = math.nan
    bf16_out_rowmax_ulp_max: float = math.nan
    bf16_out_rowmax_ulp_p999: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a flat JSON-ready dict (``worst_index`` as a list)."""
        d = asdict(self)
        d["worst_index"] = list(self.worst_index)
        return d


def error_metrics(
    out: Any,
    ref: Any,
    *,
    mag: Any,
    lse: Any = None,
    lse_ref: Any = None,
    out_format: str = "bf16",
    out_rounding: str = "rne",
) -> ErrorMetrics:
    """Compare ``out`` (any float dtype) to the float64 reference ``ref``.

    Parameters
    ----------
    out : array_like
        The emulated output, (..., M, Dv).
    ref : array_like
        The reference, same shape (NaN allowed only where every key is masked).
    mag : array_like
        :func:`magnitude_scale` of the inputs, same shape: the condition-aware scale.
    lse, lse_ref : array_like, optional
        The variant's log-sum-exp and the reference's, (..., M); both or neither.
    out_format : str
        The format the kernel writes its output in (default ``"bf16"``).
    out_rounding : str
        The rounding of that final cast (``"rne"``, or ``"rna"`` for Ascend ``CAST_ROUND``).

    Returns
    -------
    ErrorMetrics

    Raises
    ------
    ValueError
        Shapes differ, ``mag`` is negative or NaN where ``ref`` is finite, ``ref`` holds
        inf, an unknown format or rounding, or only one of ``lse``/``lse_ref``.

    Notes
    -----
    Where ``mag == 0`` (every attended ``v_kj`` is 0, so ``ref_ij = 0``) the error is 0 if
    ``out_ij == ref_ij`` and infinite otherwise. The correctly rounded BF16 reference is
    ``rne(ref)`` from the float64 reference (which is certified far inside one BF16 ULP).
    """
    y_raw, y, r, mg, fmt = _checked(out, ref, mag, out_format, out_rounding)
    covered = np.isfinite(r)
    if np.any(covered & ~(mg >= 0)):
        raise ValueError("argument 'mag' must be >= 0 (and not NaN) where 'ref' is finite")
    finite = np.isfinite(y) & covered
    n = int(np.count_nonzero(covered))
    n_nonfinite = n - int(np.count_nonzero(finite))
    cond, diff = _cond_fields(y, r, mg, covered, finite, n)
    row_max, row_med = _row_errors(y, r, covered, finite)
    ref_norm = float(np.linalg.norm(r[covered]))
    if n_nonfinite:
        rel_fro = math.inf
    elif ref_norm:
        rel_fro = float(np.linalg.norm(diff[covered])) / ref_norm
    else:
        rel_fro = 0.0 if not np.any(diff[covered]) else math.inf
    bf_max, bf_frac = _out_format_view(y_raw, r, covered, finite, fmt, out_rounding)
    bf_faithful, bf_row_max, bf_row_p999 = _row_scale_view(
        y_raw, r, covered, finite, fmt, out_rounding
    )
    return ErrorMetrics(
        n=n,
        n_nonfinite=n_nonfinite,
        row_rel_max=row_max,
        row_rel_median=row_med,
        rel_fro=rel_fro,
        bf16_out_max_ulp=bf_max,
        bf16_out_incorrect_frac=bf_frac,
        lse_err_max=_lse_error(lse, lse_ref),
        n_ref_nonfinite=int(r.size - n),
        bf16_out_cr_frac=1.0 - bf_frac if n else math.nan,
        bf16_out_faithful_frac=bf_faithful,
        bf16_out_rowmax_ulp_max=bf_row_max,
        bf16_out_rowmax_ulp_p999=bf_row_p999,
        **cond,
        **_ulp_fields(y[finite], r[finite]),
    )


def _checked(
    out: Any, ref: Any, mag: Any, out_format: str, out_rounding: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Format]:
    """``out`` as given and in float64, ``ref``, ``mag`` and the output format, checked
    (see :func:`error_metrics`'s Raises)."""
    y_raw = np.asarray(out)
    y = y_raw.astype(np.float64)
    r = np.asarray(ref, dtype=np.float64)
    mg = np.asarray(mag, dtype=np.float64)
    if y.shape != r.shape:
        raise ValueError(f"arguments 'out' {y.shape} and 'ref' {r.shape} differ in shape")
    if mg.shape != r.shape:
        raise ValueError(f"arguments 'mag' {mg.shape} and 'ref' {r.shape} differ in shape")
    if np.any(np.isinf(r)):
        raise ValueError("argument 'ref' must not hold inf (NaN marks fully masked rows)")
    if out_rounding not in MODES or out_rounding == "stochastic":
        raise ValueError(f"unknown rounding {out_rounding!r} for argument 'out_rounding'")
    return y_raw, y, r, mg, get_format(out_format)


def _cond_fields(
    y: np.ndarray, r: np.ndarray, mg: np.ndarray, covered: np.ndarray, finite: np.ndarray, n: int
) -> tuple[dict[str, Any], np.ndarray]:
    """The condition-aware error's fields of :class:`ErrorMetrics`, and ``out - ref``
    (0 where the output is not finite)."""
    # condition-aware error: inf at garbage, 0/0 = 0 where mag == 0 and out == ref
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        diff = np.where(finite, y - r, 0.0)
        cond = condition_aware(np.abs(diff), mg)
        cond_signed = np.where(diff == 0, 0.0, diff / mg / U_FP32)
    cond = np.where(covered & ~finite, np.inf, cond)
    cond_cov = cond[covered]
    if n:
        flat_worst = int(np.argmax(np.where(covered, cond, -1.0)))
        worst = tuple(int(i) for i in np.unravel_index(flat_worst, cond.shape))
        cq = [float(x) for x in np.percentile(cond_cov, [50.0, 99.9, 100.0], method="higher")]
        signed_f = cond_signed[finite]
        mean_signed = float(np.mean(signed_f)) if signed_f.size else math.nan
    else:
        worst, cq, mean_signed = (), [math.nan] * 3, math.nan
    fields = {
        "cond_err_max": float(cq[2]),
        "cond_err_p999": float(cq[1]),
        "cond_err_median": float(cq[0]),
        "cond_err_mean_signed": mean_signed,
        "worst_index": worst,
        "hist_cond_err": tuple(int(c) for c in np.histogram(cond_cov, COND_EDGES)[0])
        if n
        else (0,) * (len(COND_EDGES) - 1),
    }
    return fields, diff


def _ulp_fields(y_f: np.ndarray, r_f: np.ndarray) -> dict[str, Any]:
    """The secondary fields of :class:`ErrorMetrics` over the finite outputs ``y_f`` and
    their references ``r_f``: ULPs at the reference value, the sign test, absolute and
    relative norms, the scale bias."""
    nf = int(y_f.size)
    signed32 = signed_ulp_error(y_f, r_f, FP32) if nf else np.zeros(0)
    u32 = np.abs(signed32)
    u16 = np.abs(signed_ulp_error(y_f, r_f, BF16)) if nf else np.zeros(0)
    q32 = _percentiles(u32)
    q16 = _percentiles(u16)
    d_f = y_f - r_f
    nonzero = signed32[signed32 != 0]
    sign_p = (
        float(_binomtest(int(np.sum(nonzero > 0)), int(nonzero.size)).pvalue)
        if nonzero.size
        else math.nan
    )
    denom = float(np.linalg.norm(y_f)) * float(np.linalg.norm(r_f))
    return {
        "scale_bias": _scale_bias(y_f, r_f),
        "median_ulp_fp32": q32[0],
        "p90_ulp_fp32": q32[1],
        "p99_ulp_fp32": q32[2],
        "p999_ulp_fp32": q32[3],
        "max_ulp_fp32": q32[4],
        "median_ulp_bf16": q16[0],
        "p999_ulp_bf16": q16[3],
        "max_ulp_bf16": q16[4],
        "mean_signed_ulp_fp32": float(np.mean(signed32)) if nf else math.nan,
        "sign_test_p": sign_p,
        "max_abs": float(np.max(np.abs(d_f))) if nf else math.nan,
        "rmse": float(np.sqrt(np.mean(d_f**2))) if nf else math.nan,
        "cosine": float(np.dot(y_f, r_f)) / denom if denom else math.nan,
        "rel_l1": float(np.sum(np.abs(d_f)) / np.sum(np.abs(r_f)))
        if nf and np.any(r_f)
        else math.nan,
        "hist_ulp_fp32": tuple(int(c) for c in np.histogram(u32, HIST_EDGES)[0]),
    }


def _binomtest(k: int, n: int) -> Any:
    """scipy's two-sided binomial test, imported on first use (scipy.stats is heavy)."""
    from scipy import stats

    return stats.binomtest(k, n)


def _real_array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiuV" or (a.dtype.kind == "V" and a.dtype.itemsize > 8):
        raise TypeError(f"argument {name!r} must be a real array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"argument {name!r} must be finite")
    return a


def _row_errors(
    y: np.ndarray, r: np.ndarray, covered: np.ndarray, finite: np.ndarray
) -> tuple[float, float]:
    """Max and median over rows (last axis) of ``||y_i - r_i|| / ||r_i||`` (inf: garbage)."""
    if y.ndim == 0 or not np.any(covered):
        return math.nan, math.nan
    row_cov = np.all(covered, axis=-1)  # a masked row is NaN as a whole
    row_bad = np.any(covered & ~finite, axis=-1)
    d = np.where(finite, y - r, 0.0)
    num = np.linalg.norm(d, axis=-1)
    den = np.linalg.norm(np.where(covered, r, 0.0), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(num == 0, 0.0, num / den)
    rel = np.where(row_bad, np.inf, rel)[row_cov]
    if rel.size == 0:
        return math.nan, math.nan
    return float(np.max(rel)), float(np.percentile(rel, 50.0, method="higher"))


def _out_format_view(
    y: np.ndarray, r: np.ndarray, covered: np.ndarray, finite: np.ndarray, fmt, mode: str
) -> tuple[float, float]:
    """Max ULP distance in ``fmt`` of the cast output to the correctly rounded reference,
    and the fraction of outputs that are not that value (non-finite outputs: inf, wrong)."""
    n = int(np.count_nonzero(covered))
    if not n:
        return math.nan, math.nan
    yo = round_to(y[finite], fmt, mode)  # from the output's own dtype: one rounding
    ro = round_to(r[finite], fmt, "rne")
    dist = ulp_distance(yo, ro, fmt).astype(np.float64)
    bad = n - int(np.count_nonzero(finite))
    worst = math.inf if bad else (float(np.max(dist)) if dist.size else 0.0)
    return worst, (int(np.count_nonzero(dist)) + bad) / n


def _row_scale_view(
    y: np.ndarray, r: np.ndarray, covered: np.ndarray, finite: np.ndarray, fmt, mode: str
) -> tuple[float, float, float]:
    """The output cast to ``fmt`` on a scale that does not explode near zero: the share
    faithful (within 1 ULP of ``fmt`` of the correctly rounded reference), and the error
    ``|cast(out) - ref|`` in ULPs of ``fmt`` at the row's largest ``|ref|`` (max and 99.9 %;
    non-finite outputs are infinite)."""
    n = int(np.count_nonzero(covered))
    if not n:
        return math.nan, math.nan, math.nan
    yo = np.full(r.shape, np.nan)
    yo[finite] = round_to(y[finite], fmt, mode)
    ro = np.zeros(r.shape)
    ro[finite] = round_to(r[finite], fmt, "rne")
    dist = ulp_distance(yo[finite], ro[finite], fmt).astype(np.float64)
    faithful = int(np.count_nonzero(dist <= 1)) / n
    rowmax = np.max(np.where(covered, np.abs(r), 0.0), axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(yo - np.where(covered, r, 0.0)) / ulp(np.broadcast_to(rowmax, r.shape), fmt)
    err = np.where(covered & ~finite, np.inf, err)[covered]
    return (
        faithful,
        float(np.max(err)),
        float(np.percentile(err, 99.9, method="higher")),
    )


def _lse_error(lse: Any, lse_ref: Any) -> float:
    if lse is None and lse_ref is None:
        return math.nan
    if lse is None or lse_ref is None:
        raise ValueError("arguments 'lse' and 'lse_ref' must be given together")
    a = np.asarray(lse, dtype=np.float64)
    b = np.asarray(lse_ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"arguments 'lse' {a.shape} and 'lse_ref' {b.shape} differ in shape")
    cov = np.isfinite(b)
    if not np.any(cov):
        return math.nan
    with np.errstate(invalid="ignore"):
        e = np.where(np.isfinite(a), np.abs(a - b), np.inf)[cov]
    return float(np.max(e)) / U_FP32


def _scale_bias(y: np.ndarray, r: np.ndarray) -> float:
    """``(<y, r> / <r, r> - 1) / u_fp32``, the sums in float64 (NaN for a zero ``r``)."""
    rr = float(np.dot(r, r))
    if not rr:
        return math.nan
    return (float(np.dot(y - r, r)) / rr) / U_FP32


def _percentiles(values: np.ndarray) -> list[float]:
    if values.size == 0:
        return [math.nan] * len(PERCENTILES)
    return [float(v) for v in np.percentile(values, PERCENTILES, method="higher")]


def reference_ulp(policy: Any) -> float:
    """The reference certification (FP32 ULPs, ``method="auto"``) that judges ``policy``'s
    outputs: one FP64 ULP (``2**-29``) for an FP64 work format, else 1e-3.

    Examples
    --------
    >>> reference_ulp("exact") == 2.0**-29, reference_ulp(None)
    (True, 0.001)
    """
    return AUTO_ULP_FP64 if get_policy(policy).work == "fp64" else AUTO_ULP_FP32


def reference_error(ref: np.ndarray, auto_ulp: float) -> np.ndarray:
    """The reference's certified error ``auto_ulp * ulp_FP32(ref)`` (0 where not finite)."""
    fin = np.isfinite(ref)
    return np.where(fin, auto_ulp * ulp(np.where(fin, ref, 0.0), FP32), 0.0)
