"""The one bound check: an output against its elementwise a priori bound, per element.

The report's grid and :func:`amla_numerics.testing.compare` judge a kernel's output the same
way: over the *covered* elements (a finite reference, no integer-add garbage), an element
violates its bound when its error exceeds the bound, when the output is not finite, or when
no bound exists for it (NaN): a check that cannot fire is a bug, so NaN never passes. The
bound is reported on the same condition-aware scale as the error
(:func:`~amla_numerics.analysis.metrics.condition_aware`).

Examples
--------
>>> import numpy as np
>>> out, ref = np.array([1.0, 2.5, np.nan]), np.array([1.0, 2.0, 3.0])
>>> c = bound_check(out, ref, np.array([0.1, 1.0, 1.0]), mag=np.ones(3))
>>> c.ratio, c.violations, c.n_covered
(inf, 1, 3)
>>> bound_check(out[:2], ref[:2], np.array([0.1, 1.0]), mag=np.ones(2)).ratio
0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from amla_numerics.analysis.metrics import condition_aware

__all__ = ["BoundCheck", "bound_check"]


@dataclass(frozen=True)
class BoundCheck:
    """An output judged against its elementwise bound over the covered elements.

    Attributes
    ----------
    ratio : float
        ``max |out - ref| / bound`` (``0 / 0 = 0``; ``inf`` where the output is not finite
        or no bound exists); NaN when nothing is covered or no covered element has a bound
        (then only non-finite outputs count as violations).
    violations : int
        Covered elements above their bound, not finite, or without a bound.
    n_covered : int
        Elements judged.
    bound_cond_max, bound_cond_median : float
        The bound on the condition-aware scale over the covered
        elements: ``cond_err_max <= bound_cond_max`` whenever the bound holds.
    """

    ratio: float
    violations: int
    n_covered: int
    bound_cond_max: float
    bound_cond_median: float


def bound_check(out: Any, ref: Any, bound: Any, *, mag: Any, covered: Any = None) -> BoundCheck:
    """Judge ``out`` against ``bound`` elementwise (see :class:`BoundCheck`).

    Parameters
    ----------
    out, ref, bound, mag : array_like
        The output (any float dtype), the float64 reference, the elementwise absolute bound
        and ``sum_k p_k |v_k|``, all of one shape.
    covered : array_like of bool, optional
        The elements to judge (default: where ``ref`` is finite). Pass
        ``isfinite(ref) & ~garbage_mask()`` to exempt the emulator's counted hazards.
    """
    o = np.asarray(out, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    b = np.asarray(bound, dtype=np.float64)
    cov = np.isfinite(r) if covered is None else np.asarray(covered, dtype=bool)
    n = int(np.count_nonzero(cov))
    if not n:
        return BoundCheck(math.nan, 0, 0, math.nan, math.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(o - r)[cov]
    bc = b[cov]
    scaled = condition_aware(bc, np.asarray(mag, dtype=np.float64)[cov])
    b_max, b_med = float(np.max(scaled)), float(np.median(scaled))
    if np.all(np.isnan(bc)):
        return BoundCheck(math.nan, int(np.count_nonzero(~np.isfinite(err))), n, b_max, b_med)
    bad = ~np.isfinite(err) | np.isnan(bc) | (err > bc)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / bc)
    ratio = np.where(np.isnan(ratio) | np.isnan(bc), np.inf, ratio)  # no bound, or garbage
    return BoundCheck(float(np.max(ratio)), int(np.count_nonzero(bad)), n, b_max, b_med)
