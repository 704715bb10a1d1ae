"""Error metrics of an attention output against its reference.

Per element: the ULP error in FP32 and in BF16 units (:func:`amla_numerics.ulp.ulp_error`,
the ULP taken at the reference value), and the signed FP32 error for bias. Over the
array: percentiles, the mean signed error with a two-sided sign test, and the normwise
figures FlashAttention and SageAttention papers report (relative Frobenius, max abs,
RMSE, cosine similarity, relative L1).

Non-finite outputs (from AMLA's integer-add hazards) are excluded from every statistic
and counted in ``n_nonfinite``: a statistic over garbage would hide it.

Examples
--------
>>> import numpy as np
>>> ref = np.array([1.0, 2.0, -3.0, 4.0])
>>> out = np.float32(ref) + np.float32([0, 2**-22, 0, -2**-21])
>>> m = error_metrics(out, ref)
>>> m.max_ulp_fp32, m.n_nonfinite
(1.0, 0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from amla_numerics.formats import BF16, FP32
from amla_numerics.ulp import signed_ulp_error

__all__ = ["HIST_EDGES", "PERCENTILES", "ErrorMetrics", "error_metrics"]

#: Percentiles reported for ULP errors (100 is the max).
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9, 100.0)

#: Fixed FP32-ULP histogram edges shared by every record: [0, 2**-8), then one bin per
#: power of two up to 2**24 (a BF16-sized error is 2**16 FP32 ULPs), then [2**24, inf).
HIST_EDGES: tuple[float, ...] = (0.0, *(2.0**e for e in range(-8, 25)), float("inf"))


@dataclass(frozen=True)
class ErrorMetrics:
    """Summary of an output's error against a float64 reference.

    ULP fields are in units of the FP32 (``_fp32``) or BF16 (``_bf16``) ULP at the
    reference value. ``sign_test_p`` is the two-sided binomial p-value of the hypothesis
    "positive and negative errors are equally likely" (NaN when every error is 0).
    """

    n: int
    n_nonfinite: int
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
    rel_fro: float
    max_abs: float
    rmse: float
    cosine: float
    rel_l1: float
    hist_ulp_fp32: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a flat JSON-ready dict."""
        return asdict(self)


def error_metrics(out: Any, ref: Any) -> ErrorMetrics:
    """Compare ``out`` (any float dtype) to the float64 reference ``ref`` (same shape).

    Raises
    ------
    ValueError
        If the shapes differ or ``ref`` is not finite.
    """
    y = np.asarray(out).astype(np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if y.shape != r.shape:
        raise ValueError(f"arguments 'out' {y.shape} and 'ref' {r.shape} differ in shape")
    if not np.all(np.isfinite(r)):
        raise ValueError("argument 'ref' must be finite")
    finite = np.isfinite(y)
    y_f, r_f = y[finite], r[finite]
    n = int(y_f.size)
    signed32 = signed_ulp_error(y_f, r_f, FP32) if n else np.zeros(0)
    u32 = np.abs(signed32)
    u16 = np.abs(signed_ulp_error(y_f, r_f, BF16)) if n else np.zeros(0)
    q32 = _percentiles(u32)
    q16 = _percentiles(u16)
    diff = y_f - r_f
    ref_norm = float(np.linalg.norm(r_f))
    nonzero = signed32[signed32 != 0]
    sign_p = (
        float(stats.binomtest(int(np.sum(nonzero > 0)), int(nonzero.size)).pvalue)
        if nonzero.size
        else float("nan")
    )
    denom = float(np.linalg.norm(y_f)) * ref_norm
    return ErrorMetrics(
        n=n,
        n_nonfinite=int(y.size - n),
        median_ulp_fp32=q32[0],
        p90_ulp_fp32=q32[1],
        p99_ulp_fp32=q32[2],
        p999_ulp_fp32=q32[3],
        max_ulp_fp32=q32[4],
        median_ulp_bf16=q16[0],
        p999_ulp_bf16=q16[3],
        max_ulp_bf16=q16[4],
        mean_signed_ulp_fp32=float(np.mean(signed32)) if n else float("nan"),
        sign_test_p=sign_p,
        rel_fro=float(np.linalg.norm(diff)) / ref_norm if ref_norm else float("nan"),
        max_abs=float(np.max(np.abs(diff))) if n else float("nan"),
        rmse=float(np.sqrt(np.mean(diff**2))) if n else float("nan"),
        cosine=float(np.dot(y_f, r_f)) / denom if denom else float("nan"),
        rel_l1=float(np.sum(np.abs(diff)) / np.sum(np.abs(r_f)))
        if n and np.any(r_f)
        else float("nan"),
        hist_ulp_fp32=tuple(int(c) for c in np.histogram(u32, HIST_EDGES)[0]),
    )


def _percentiles(values: np.ndarray) -> list[float]:
    if values.size == 0:
        return [float("nan")] * len(PERCENTILES)
    return [float(v) for v in np.percentile(values, PERCENTILES, method="higher")]
