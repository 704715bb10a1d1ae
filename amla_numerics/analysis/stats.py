"""Statistics over seeds: means with Student t intervals and ratios paired by seed.

Every interval the toolkit prints over seeds comes from here (scipy.stats is imported on
first use, so importing this module stays light).

Examples
--------
>>> from amla_numerics.analysis.stats import mean_ci95
>>> mean_ci95([1.0, 1.0])
(1.0, [1.0, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["mean_ci95", "paired_ratio_ci95"]


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, list[float]]:
    """Mean and two-sided 95 % Student t interval (n - 1 dof) of per-seed values.

    One value: its interval is [nan, nan]; a non-finite value makes the mean non-finite and
    the interval [nan, nan]; equal values give a zero-width interval.

    Examples
    --------
    >>> m, (lo, hi) = mean_ci95([1.0, 2.0, 3.0])
    >>> m, round(lo, 4), round(hi, 4)
    (2.0, -0.4841, 4.4841)
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, [math.nan, math.nan]
    mean = float(np.mean(x))
    if x.size < 2 or not np.all(np.isfinite(x)):
        return mean, [math.nan, math.nan]
    sem = float(np.std(x, ddof=1)) / math.sqrt(x.size)
    if sem == 0:
        return mean, [mean, mean]
    half = float(stats.t.ppf(0.975, x.size - 1)) * sem
    return mean, [mean - half, mean + half]


def paired_ratio_ci95(num: Sequence[float], den: Sequence[float]) -> tuple[float, list[float]]:
    """Geometric mean of ``num / den`` paired by seed and its 95 % t interval (on logs).

    Examples
    --------
    >>> r, (lo, hi) = paired_ratio_ci95([2.0, 4.0], [1.0, 2.0])
    >>> r, lo, hi
    (2.0, 2.0, 2.0)
    """
    a = np.asarray(num, dtype=np.float64)
    b = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(a / b)
    if logs.size == 0 or not np.all(np.isfinite(logs)):
        return (math.nan if logs.size == 0 else float(np.exp(np.mean(logs)))), [math.nan] * 2
    m, (lo, hi) = mean_ci95(logs)
    return float(np.exp(m)), [float(np.exp(lo)), float(np.exp(hi))]
