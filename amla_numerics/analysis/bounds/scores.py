"""The scores stage: ``S = fl(QK^T scale)`` (and an additive bias), per key.

``docs/bounds.md`` section 2 (the score term ``e_i``).
"""

from __future__ import annotations

import numpy as np

from amla_numerics.analysis.bounds.arith import _U64, _gamma, _prob_scale
from amla_numerics.analysis.bounds.inputs import BoundInputs
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.formats import get_format

__all__ = ["score_error"]


def score_error(b: Bound, x: BoundInputs, prob: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per key, the absolute error bound (nats) of the computed score, and ``|scale q.k|``.

    The dot product (``b.qk_gamma``, or its probabilistic scaling with ``prob``), the
    inputs' rounding to ``b.qk_in`` where they do not fit it (and its subnormal floor), the
    scale, the float64 scores of :func:`bound_inputs`, an additive bias's rounding and add.

    Returns
    -------
    e, s_qk : numpy.ndarray
        ``(..., M, N)``: ``e`` is 0 at masked keys; ``s_qk`` bounds ``|scale q.k|`` (with a
        bias ``b``, ``min(|s| + |b|, scale |q||k|)``), 0 at masked keys.
    """
    u = b.u_work
    fin = np.isfinite(x.s)
    s0 = np.where(fin, x.s, 0.0)
    d = x.head_dim
    qk_in = get_format(b.qk_in)
    k_in = 0.0 if b.qk_in in x.qk_formats else qk_in.unit_roundoff
    g_qk = b.qk_gamma * (1.0 + k_in) ** 2
    if prob and not b.qk_biased:
        g_qk = _prob_scale(g_qk, d, u)
    coef_qk = (1.0 + u) ** 2 * (g_qk + 2.0 * k_in + k_in * k_in) + _gamma(d + 2, _U64)
    s_qk = np.abs(s0)  # |scale q.k|: with a bias b, at most min(|s| + |b|, scale |q||k|)
    b_abs = None if x.bias_abs is None else np.where(fin, x.bias_abs, 0.0)
    if b_abs is not None:
        s_qk = np.minimum(s_qk + b_abs, x.qk_abs)
    e = coef_qk * x.qk_abs + (2.0 * u + u * u) * np.abs(s_qk)
    if k_in and x.qk_l1 is not None:
        sig_in = qk_in.min_subnormal
        e = e + (1.0 + u) ** 2 * sig_in * (1.0 + k_in) * (x.qk_l1 + abs(x.scale) * d * sig_in)
    e = e + (1.0 + u) ** 2 * abs(x.scale) * b.sigma_pv_out + 2.0 * b.sigma_work
    if b.qk_align and x.qk_l1 is not None:  # the block FMA's alignment floor
        e = e + (1.0 + u) ** 2 * b.qk_align * np.maximum(x.qk_l1, abs(x.scale))
    if b_abs is not None:  # fl(S + fl(b)): the bias's rounding and the add
        e = e + u * b_abs + u * (np.abs(s0) + e + u * b_abs) + 2.0 * b.sigma_work
    e = np.where(fin, e, 0.0)
    return e, s_qk
