"""The exponentials stage: ``P = exp(fl(S - m))`` per key (and FA4's ``exp2`` of one FMA).

The exp's error ``exp_u + exp_slope |x|`` under the policy's exp model, and the per-key
relative terms common to the numerator and the denominator: the score's, the subtraction's
``u |x|`` and the exp's (``docs/bounds.md`` section 2; FA4's exp2: section 6, "FP8 P casts,
the static P scale, the KV order, fa4").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import _LN2
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.flash.stages import EXP64_REL_ERR
from amla_numerics.formats import get_format
from amla_numerics.variants import spec

__all__: list[str] = []


def _exp_fields(pol: Any, variant: str) -> dict:
    """The :class:`Bound` fields of the exp under ``pol``: ``exp_u``, ``exp_slope`` (``u``
    and 0 correctly rounded, ``2u`` for binary64's faithful exp; ``8u`` and ``2u`` for the
    polynomial model) and
    ``sigma_work``, the work format's subnormal spacing (raised for FA4's exp2)."""
    work = get_format(pol.work)
    u = work.unit_roundoff
    exp_u, exp_slope = (u, 0.0) if pol.exp == "cr" else (8.0 * u, 2.0 * u)
    if pol.exp == "cr" and pol.work == "fp64":  # numpy's binary64 exp: faithful, not CR
        exp_u = EXP64_REL_ERR
    sigma_work = work.min_subnormal
    if spec(variant).softmax == "fa4" and pol.work == "fp32":
        # FA4's exp2 (docs/numerics.md section 13): FA4_EX2_REL_ERR for x >= -126; the
        # FMA's and c's roundings (2u |x| in nats: exp_slope) and that of fl(m c) (u |m|,
        # inside the score's systematic 2u |s| plus u |s - m|); below 2**-126 the result is
        # a subnormal pattern or 0, off by < 2**-126: sigma_work raised to 2**-125 (it only
        # enlarges every subnormal term)
        from amla_numerics.flash.fa4 import FA4_EX2_REL_ERR

        exp_u, exp_slope = FA4_EX2_REL_ERR, 2.0 * u
        sigma_work = max(sigma_work, 2.0**-125)
    return {"exp_u": exp_u, "exp_slope": exp_slope, "sigma_work": sigma_work}


def _common_terms(
    b: Bound,
    s0: np.ndarray,
    e: np.ndarray,
    s_qk: np.ndarray,
    fin: np.ndarray,
    smax0: np.ndarray,
    E: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per key, ``(e_sys, common)``: the scale's (and the product's) systematic rounding
    ``(2u + u^2) |s|``, and the terms common to numerator and denominator beyond it: the
    score's error, ``fl(s - m)``'s ``u |x|`` and the exp's ``exp_u + exp_slope |x|``, with
    ``|x| <= max s - s + E + e`` (``+ tau ln 2`` for a stale max)."""
    u = b.u_work
    lazy = spec(b.variant).stale_max is not None  # a stale max: P up to 2**tau
    span = np.where(fin, smax0 - s0, 0.0) + E + e + (b.tau * _LN2 * (1.0 + 4 * u) if lazy else 0.0)
    e_sys = (2.0 * u + u * u) * np.abs(s_qk)  # the scale's rounding (and the product's): linear
    common_ind = e - e_sys + (u + b.exp_slope) * span + b.exp_u
    return e_sys, common_ind
