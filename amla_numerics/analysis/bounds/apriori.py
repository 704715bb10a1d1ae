"""The stage constants of a variant's bound under a policy: :func:`a_priori_bound`.

``docs/bounds.md`` sections 2-6 derive each constant; section 7 the probabilistic form.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.accumulation import _accumulation_fields
from amla_numerics.analysis.bounds.division import _division_term
from amla_numerics.analysis.bounds.exponentials import _exp_fields
from amla_numerics.analysis.bounds.pcast import _p_scale_w, _pcast_fields
from amla_numerics.analysis.bounds.rescale import _bias_step, _rescale_fields, _rescale_step
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.formats import get_format
from amla_numerics.variants import (
    DEFAULT_C,
    check_c,
    check_tau,
    check_variant,
    default_tau,
    spec,
    tau_log2,
)

__all__ = ["a_priori_bound"]


def a_priori_bound(
    variant: str,
    *,
    head_dim: int,
    kv_len: int,
    block_n: int = 512,
    c: float = DEFAULT_C,
    tau: float | None = None,
    policy: Any = None,
) -> Bound:
    """The stage constants of ``variant``'s error bound under ``policy``.

    Parameters
    ----------
    variant : str
        One of :data:`amla_numerics.variants.VARIANTS`.
    head_dim, kv_len, block_n : int
        ``d``, ``N`` and the KV block size ``B`` (each >= 1).
    c : float
        AMLA's compensation coefficient.
    tau : float, optional
        The stale-max threshold (``lazy``/``fa4``: log2 units, default 8; ``skip_scale``:
        nats, default 6, held in the :class:`Bound` converted to log2 units by
        :func:`~amla_numerics.variants.tau_log2`, so its terms are ``lazy``'s).
    policy : Policy or str, optional
        The emulator's precision policy (default ``"ascend"``): every constant is read
        from it (formats, roundings, accumulation models, ``dn_clamp``, ``eps_bias``).

    Returns
    -------
    Bound
        Evaluate it on inputs with :func:`~amla_numerics.analysis.bounds.elementwise_bound`.

    Raises
    ------
    ValueError
        Unknown variant or a size below 1.

    Notes
    -----
    The derivation, term by term, is ``docs/bounds.md``: the frame (section 1), the
    per-key terms of the scores and the exponentials (2), the P cast and the accumulated
    sums (3), the later blocks' rescales (4), AMLA's ``dn`` clamp (5), the division and
    underflow (6) and the probabilistic bound (7). Each stage's constants are computed in
    the module of that stage.

    Examples
    --------
    >>> b = a_priori_bound("amla", head_dim=576, kv_len=4096, block_n=512)
    >>> b.blocks, b.u_work == 2.0**-24, b.dn_clamp, b.bias_units
    (8, True, -30, 8)
    >>> a_priori_bound("fa_fp32", head_dim=64, kv_len=1000, policy="exact").u_cast
    0.0
    """
    variant = check_variant(variant)
    for arg, value in (("head_dim", head_dim), ("kv_len", kv_len), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"argument {arg!r} must be an integer >= 1, got {value!r}")
    c = check_c(c)
    tau = tau_log2(variant, check_tau(default_tau(variant) if tau is None else tau))
    pol = _resolve_policy(policy, variant)
    u = get_format(pol.work).unit_roundoff
    sp = spec(variant)
    b = int(block_n) if sp.tiled else int(kv_len)
    blocks = -(-int(kv_len) // int(block_n)) if sp.tiled else 1
    exp = _exp_fields(pol, variant)
    bound = Bound(
        variant=variant,
        head_dim=int(head_dim),
        kv_len=int(kv_len),
        block_n=int(block_n),
        blocks=blocks,
        u_work=u,
        tau=float(tau),
        work=pol.work,
        exp_model=pol.exp,
        kv_order=pol.kv_order if sp.tiled else "forward",
        **exp,
        **_pcast_fields(pol, variant, float(tau)),
        **_accumulation_fields(pol, variant, int(head_dim), b, _p_scale_w(pol)),
        **_rescale_fields(pol, variant, c, exp["exp_u"], exp["exp_slope"]),
    )
    terms = {
        "exp": bound.exp_u,
        "fold": u if sp.is_amla else 0.0,
        "cast": bound.u_cast,
        "pv": bound.pv_gamma,
        "rowsum": bound.rowsum_gamma,
        "bias_step": _bias_step(bound),
        "rescale_step": _rescale_step(bound),
        "division": _division_term(variant, u),
    }
    return dataclasses.replace(bound, terms=terms)


def _resolve_policy(policy: Any, variant: str):
    # the policy record and the variant's FP8 P cast (flash.fp8), not the emulator
    from amla_numerics.flash.fp8 import variant_policy
    from amla_numerics.flash.policy import get_policy

    return variant_policy(get_policy(policy), variant)
