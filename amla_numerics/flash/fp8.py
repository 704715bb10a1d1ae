"""The FP8 P V stage: the variant's P cast format, the static scale S, and its trace counts.

FlashAttention-3 (Shah et al. 2024, section 3.3) runs the second product ``P V`` with an
FP8 ``P``: the FP32 probabilities of a block are cast to E4M3 before the matrix unit. This
module holds the stage, in the policy's work format ``W`` (``fl`` = one rne operation):

1. ``S = fl(p_scale)`` (the policy's static scale, rounded to ``W``);
2. ``X = P_j`` (AMLA variants: ``fl(P_j * r^_j)``), then ``X' = fl(X * S)`` (skipped when
   ``S = 1``);
3. ``P~ = cast(X', p_cast, p_cast_rounding)``: one rounding of the exact ``X'``; the FP8
   formats saturate to ``+-max_finite`` (PTX's ``cvt.rn.satfinite``), the 16-bit ones do
   not (:func:`~amla_numerics.flash.stages.cast`);
4. ``PV_j = fl(PV'_j / S)`` after the matrix-unit product ``PV'_j = P~ @ V_j`` (skipped when
   ``S = 1``).

Counted per row and block (the emulator's :class:`~amla_numerics.flash.emulator.Trace`):
``p_underflow``, elements with ``X != 0`` whose cast is 0 (a probability lost entirely,
``X' < min_subnormal / 2`` for rne: ``2**-10`` in E4M3, ``2**-17`` in E5M2), and
``p_saturate``, elements the cast saturated (beyond ``max_finite`` after rounding).

:func:`variant_policy` turns a policy into the one a variant runs: the FP8 variants of
:data:`~amla_numerics.variants.FP8_P_VARIANTS` replace a 16-bit ``p_cast`` by their FP8
format with rne (the GPU's rounding); a policy that already names an FP8 ``p_cast`` keeps
it, and the ``"exact"`` preset's ``p_cast=None`` stays (no cast at all).

Examples
--------
>>> import numpy as np
>>> from amla_numerics.flash.policy import get_policy
>>> pol = variant_policy(get_policy("ascend"), "fa_fp8")
>>> pol.p_cast, pol.p_cast_rounding
('e4m3', 'rne')
>>> st = p_cast_stage(np.float32([[1.0, 0.3, 2.0**-11, 0.0]]), pol)
>>> st.values.tolist(), st.underflow.tolist(), st.saturate.tolist()
([[1.0, 0.3125, 0.0, 0.0]], [1], [0])
>>> st = p_cast_stage(np.float32([[1.0, 2.0**-11]]), pol.replace(p_scale=512.0))
>>> st.values.tolist(), st.underflow.tolist(), st.saturate.tolist()  # 512 > 448 saturates
([[448.0, 0.25]], [0], [1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amla_numerics.flash.policy import Policy
from amla_numerics.flash.stages import SATURATING, cast, cast_saturating
from amla_numerics.variants import FP8_P_VARIANTS

__all__ = ["FP8_FORMATS", "PCast", "p_cast_stage", "remove_p_scale", "variant_policy"]

#: The FP8 formats a P cast may use.
FP8_FORMATS: tuple[str, ...] = SATURATING


@dataclass(frozen=True)
class PCast:
    """The cast P tile and its per-row counts.

    Attributes
    ----------
    values : numpy.ndarray
        ``cast(fl(X * S))`` in the work dtype (the scaled domain), shape of ``X``.
    underflow, saturate : numpy.ndarray
        int64, ``X``'s shape without the last axis: per row, the elements whose non-zero
        ``X`` cast to 0, and those the cast saturated (or, for a 16-bit format, overflowed).
    """

    values: np.ndarray
    underflow: np.ndarray
    saturate: np.ndarray


def variant_policy(policy: Policy, variant: str) -> Policy:
    """The policy ``variant`` runs under (see the module docstring).

    Examples
    --------
    >>> from amla_numerics.flash.policy import get_policy
    >>> variant_policy(get_policy("ascend"), "fa_fp32").p_cast
    'bf16'
    >>> variant_policy(get_policy("ascend").replace(p_cast="e5m2"), "amla_fp8").p_cast
    'e5m2'
    >>> variant_policy(get_policy("exact"), "fa_fp8").p_cast is None
    True
    """
    fmt = FP8_P_VARIANTS.get(variant)
    if fmt is None or policy.p_cast is None or policy.p_cast in FP8_FORMATS:
        return policy
    return policy.replace(p_cast=fmt, p_cast_rounding="rne")


def p_cast_stage(x: np.ndarray, policy: Policy) -> PCast:
    """Steps 2-3 of the module docstring on a tile ``x`` (work dtype, (..., M, B))."""
    x = np.asarray(x)
    dt = x.dtype.type
    s = dt(policy.p_scale)
    if s != 1:
        with np.errstate(over="ignore"):
            xs = x * s
    else:
        xs = x
    fmt = policy.p_cast
    if fmt is None:
        y, sat = xs, np.zeros(xs.shape, bool)
    elif fmt in FP8_FORMATS:
        y, sat = cast_saturating(xs, fmt, policy.p_cast_rounding)
    else:
        y = cast(xs, fmt, policy.p_cast_rounding)
        sat = np.isinf(y) & np.isfinite(xs)
    under = (x != 0) & (y == 0)
    return PCast(y, np.count_nonzero(under, axis=-1), np.count_nonzero(sat, axis=-1))


def remove_p_scale(pv: np.ndarray, policy: Policy) -> np.ndarray:
    """Step 4: ``fl(PV' / S)`` in ``pv``'s dtype (identity when ``S = 1``).

    Examples
    --------
    >>> from amla_numerics.flash.policy import get_policy
    >>> remove_p_scale(np.float32([448.0]), get_policy("ascend").replace(p_scale=448.0))
    array([1.], dtype=float32)
    """
    pv = np.asarray(pv)
    s = pv.dtype.type(policy.p_scale)
    if s == 1:
        return pv
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return pv / s
