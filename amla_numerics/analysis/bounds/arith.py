"""The rounding-error arithmetic every stage's term is written in.

Higham's ``gamma_n``, the probabilistic ``LAMBDA sqrt(n) u`` (``docs/bounds.md`` section 7),
the relative and absolute error of one cast, the inclusion of one format in another, and the
slack on the float64 evaluation of the bound itself (section 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from amla_numerics.formats import get_format

__all__ = ["LAMBDA"]

#: Confidence parameter of the probabilistic bounds (Higham & Mary 2019, Theorem 2.8):
#: a sum of ``n`` independent mean-zero rounding errors each of size ``<= u`` exceeds
#: ``LAMBDA * sqrt(n) * u`` with probability at most ``2 exp(-LAMBDA**2 (1 - u)**2 / 2)``
#: (about 7.5e-6 for ``LAMBDA = 5``).
LAMBDA: float = 5.0

_LN2 = math.log(2.0)

#: Slack on the float64 evaluation of the bound itself (weights, sums, products: relative
#: errors ~1e-13, far below every term).
_F64_SLACK = 1.0 + 2.0**-20

#: Unit roundoff of float64, for the float64 evaluation of the exact scores.
_U64 = 2.0**-53


def _gamma(n: float, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u) (inf when n u >= 1)."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 1.0 else math.inf


def _prob_scale(gamma: float, n: int, u: float) -> float:
    """Probabilistic counterpart of a gamma_n-type constant: at most LAMBDA sqrt(n) u."""
    return min(gamma, LAMBDA * math.sqrt(max(n, 1)) * u) if gamma > u else gamma


def _cast_u(fmt: str | None, mode: str) -> float:
    """Relative error bound of one cast to ``fmt`` in ``mode`` (0: no cast)."""
    if fmt is None:
        return 0.0
    u = get_format(fmt).unit_roundoff
    return 2.0 * u if mode in ("rz", "ru", "rd") else u


def _sigma(fmt: str | None) -> float:
    """Absolute error bound of one rounding into ``fmt``'s subnormal range (its spacing)."""
    return 0.0 if fmt is None else get_format(fmt).min_subnormal


def _contains(outer: str, inner: str) -> bool:
    """Whether every value of format ``inner`` is a value of format ``outer``."""
    o, i = get_format(outer), get_format(inner)
    return o.p >= i.p and o.emax >= i.emax and o.emin - o.p <= i.emin - i.p


def _count(n: Any, prob: bool) -> Any:
    """``n`` roundings of size ``u``: ``n`` (deterministic) or ``LAMBDA sqrt(n)``
    (probabilistic)."""
    return np.minimum(n, LAMBDA * np.sqrt(n)) if prob else n
