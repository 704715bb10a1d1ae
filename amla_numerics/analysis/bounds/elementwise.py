"""The bound evaluated on inputs: :func:`elementwise_bound`, per output element.

Reads the exact scores to find the KV blocks where the running max can change, sums each
key's stage terms into the numerator's and denominator's relative weight errors, and adds
the clamp, the division and the underflow terms (``docs/bounds.md`` sections 1-7).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.accumulation import _add_terms
from amla_numerics.analysis.bounds.arrays import _to_keys
from amla_numerics.analysis.bounds.division import _relative_error, _Terms, _with_underflow
from amla_numerics.analysis.bounds.exponentials import _common_terms
from amla_numerics.analysis.bounds.inputs import BoundInputs, _reverse_keys, bound_inputs
from amla_numerics.analysis.bounds.rescale import _amla_terms, _max_changes, _rescale_terms
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.analysis.bounds.scores import score_error
from amla_numerics.formats import get_format
from amla_numerics.variants import spec

__all__ = ["elementwise_bound"]


def elementwise_bound(
    bound: Bound,
    q: Any,
    k: Any = None,
    v: Any = None,
    scale: float | None = None,
    *,
    kind: str = "deterministic",
    mask: Any = None,
    causal: bool = False,
) -> np.ndarray:
    """Evaluate ``bound`` on inputs: an absolute error bound for every output element.

    Parameters
    ----------
    bound : Bound
        From :func:`a_priori_bound`.
    q, k, v : array_like
        ``(M, d)``, ``(N, d)``, ``(N, dv)`` (any float dtype; leading dims broadcast).
        Or pass a :class:`BoundInputs` as ``q`` alone, to evaluate several bounds on the
        same inputs without recomputing their statistics.
    scale : float, optional
        The softmax scale (with arrays; default ``1/sqrt(d)``).
    kind : {"deterministic", "probabilistic"}
        ``docs/bounds.md`` section 7 (the probabilistic bound holds with high
        probability under its model, not always).
    mask, causal
        With arrays: the attention mask, as :func:`amla_numerics.flash.attention` reads it.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(..., M, dv)``, never NaN: ``+inf`` on rows with no attended key
        (their output is undefined) and where a weight's relative error bound exceeds
        ``e**709`` (scores beyond ~1e31) or any term overflows float64.

    Notes
    -----
    The exact scores decide, per row and KV block, whether the running max can change
    (near-ties count as changes); the weights and sums are evaluated in float64 (relative
    error ~1e-13, far below every term) and the bound is then inflated by ``1 + 2**-20``.
    """
    if kind not in ("deterministic", "probabilistic"):
        raise ValueError(
            f"argument 'kind' must be 'deterministic' or 'probabilistic', got {kind!r}"
        )
    if not isinstance(bound, Bound):
        raise TypeError(f"argument 'bound' must be a Bound, got {type(bound).__name__}")
    if isinstance(q, BoundInputs):
        x = q
    elif k is None or v is None:
        raise TypeError("pass q, k, v (and scale), or a BoundInputs as q alone")
    else:
        x = bound_inputs(q, k, v, scale, mask=mask, causal=causal)
    if x.kv_len != bound.kv_len or x.head_dim != bound.head_dim:
        raise ValueError(
            f"inputs (d={x.head_dim}, N={x.kv_len}) do not match the bound "
            f"(d={bound.head_dim}, N={bound.kv_len})"
        )
    if bound.kv_order == "reverse" and bound.blocks > 1:
        x = _reverse_keys(x, bound.blocks * bound.block_n)
    # scores so large that a term overflows float64 make the bound +inf: every undefined
    # intermediate (inf - inf, 0 / 0, 0 * inf) arises only where a term is already +inf
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        total = _evaluate(bound, x, kind == "probabilistic")
    return np.where(np.isnan(total), np.inf, total)


def _evaluate(b: Bound, x: BoundInputs, prob: bool) -> np.ndarray:
    """The bound of every output element, stage by stage (see the module docstring)."""
    n_keys = x.kv_len
    s = x.s
    fin = np.isfinite(s)  # attended keys
    s0 = np.where(fin, s, 0.0)
    e, s_qk = score_error(b, x, prob)
    E = np.max(e, axis=-1, keepdims=True)  # (..., M, 1)
    any_key = np.any(fin, axis=-1, keepdims=True)
    smax = np.max(np.where(fin, s, -np.inf), axis=-1, keepdims=True)
    smax0 = np.where(any_key, smax, 0.0)
    ch = _max_changes(b, x, e, fin)
    # AMLA: n at both ends of every jump, the clamp, the compensation mismatch
    rho_key: Any = 0.0
    dn_key: Any = 0.0
    logk_key: np.ndarray | None = None
    if spec(b.variant).is_amla:
        rho_key, dn_key, logk_key = _amla_terms(b, x, e, fin, ch)
    # per-key first-order relative terms: t = t_ind (per key) + t_blk (per block)
    # + t_sys (systematic); numerator and denominator
    e_sys, common_ind = _common_terms(b, s0, e, s_qk, fin, smax0, E)
    v_in = 0.0 if b.pv_in in x.v_formats else get_format(b.pv_in).unit_roundoff
    num_ind = common_ind + b.terms["fold"] + b.u_cast + v_in
    blk_idx = np.arange(n_keys) // ch.bn
    own = (blk_idx > 0).astype(np.float64)  # key i's tile is added to an existing O
    ca = _to_keys(ch.chg_after, ch.bn, n_keys)
    na = _to_keys(ch.nochg_after, ch.bn, n_keys)
    da = _to_keys(ch.d_after, ch.bn, n_keys)
    num_blk, den_blk = _add_terms(b, s0, own, na, ca, prob)
    num_sys, den_sys = _rescale_terms(b, s0, na, ca, da, rho_key, dn_key)
    terms = _Terms(num_ind, num_blk, num_sys + e_sys, common_ind, den_blk, den_sys + e_sys)
    total, alpha = _relative_error(b, x, terms, fin, s0, E, any_key, smax0, logk_key, prob)
    return _with_underflow(b, x, total, alpha, s0, e, fin, ch, common_ind, logk_key, any_key)
