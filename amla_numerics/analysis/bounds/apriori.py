"""The stage constants of a variant's bound under a policy: :func:`a_priori_bound`.

``docs/bounds.md`` sections 2-6 derive each constant; section 7 the probabilistic form.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.accumulation import (
    _accumulation_gamma,
    _align_floor,
    _biased,
    _matmul_gamma,
    _pv_sigma,
)
from amla_numerics.analysis.bounds.arith import _LN2, _cast_u, _contains, _gamma, _sigma
from amla_numerics.analysis.bounds.pcast import _p_scale_terms
from amla_numerics.analysis.bounds.rescale import _rho_a, _work_constants
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

    Raises
    ------
    ValueError
        Unknown variant or a size below 1.

    Notes
    -----
    Full derivation: ``docs/bounds.md``. Write ``w_i`` for the exact softmax weights of a
    row, ``V_i`` for one value column, ``out = sum_i w_i V_i``. If the computed numerator
    weights are ``w_i (1 + alpha_i)`` and the denominator weights ``w_i (1 + beta_i)``
    (relative to the exact ones in a common frame), then
    ``|out' - out| <= (sum_i w_i |alpha_i| |V_i| + |out| sum_i w_i |beta_i|) / D`` with
    ``D = max(1 - sum_i w_i |beta_i|, e**-E / L)`` (``L = sum_i e**(s_i - max s) >= 1``,
    ``E`` the largest score error: the computed ``l`` is at least 1). A product of
    factors ``1 + delta_k`` with ``sum |delta_k| <= t`` is within ``expm1(t)`` of 1, so
    ``|alpha_i| <= expm1(t_i)`` with ``t_i`` the sum of the stage terms key ``i`` goes
    through (``u`` the work unit roundoff, ``u_c`` the cast's):

    * common to numerator and denominator: the score error ``e_i`` (dot product, scale,
      input rounding, float64 evaluation of ``s``), the subtraction ``u |x_i|`` and the
      exp ``exp_u + exp_slope |x_i|`` with ``|x_i| <= max s - s_i + E + e_i``
      (``+ tau ln 2`` for ``lazy``);
    * numerator only: AMLA's fold (``u``), the cast (``u_c``), V's rounding to the matrix
      unit's format, the block's P V tile (``g_pv``); denominator only: the row sum;
    * per later block ``j``: the add of the next tile (``u``, both sides). Blocks where
      the exact scores prove the row max cannot change (``max_{block j}(s + e) <=
      max_{blocks < j}(s - e)``) rescale by exactly 1 (``a_j = exp(0) = 1``; AMLA:
      ``n``, ``r^``, ``cof`` unchanged, ``ratio = 1``) except AMLA's bias: the add of
      ``nu_0 = rna(fl(bias) 2**23)`` (8 units for 1e-6) scales O by ``1 + theta_0``,
      ``0 < theta_0 <= nu_0 2**-23 (1 + nu_0 2**-23)``, a systematic term. At blocks
      where the max may change: FA: the multiply (``u``) and ``a_j``'s error
      ``exp_u + (u + exp_slope) |dm_j|`` (on both sides: it does not cancel between old
      and new keys); AMLA: on l the same, on O the mismatch ``rho = (1 + a) H - 1``
      between the add's factor ``2**dnc (1 + h nu 2**-23)`` (``h`` in ``[1/2, 1]`` up
      to ``1 + |nu| 2**-23``, carries and borrows included) and the exact
      ``2**dn cof_{j-1}/cof_j`` times ``H = exp(2 eta)``, ``eta <= eta_slope |m| +
      eta_const`` the FP32 residual's error; ``a`` collects ``kappa |q - 1|`` with
      ``kappa = max |h c - 1|``, the roundings of the cofs, the ratio and ``eps``, the
      bias and ``u (1 + |eps|)`` from N's rounding, plus ``u |dnc_j|`` per block
      (``sum |dnc_j|`` over the later blocks bounded from the exact scores). ``q_j =
      cof_{j-1} / cof_j`` is bounded from the kernel's own ``n``, ``r`` and ``r^``
      recomputed at both ends of the running max's score interval (where they agree;
      the a priori ``|cof - 1| <= u_r`` elsewhere).
    * the clamp (``dn_j < dn_clamp``): O is scaled by ``2**dn_clamp`` instead of
      ``2**dn_j``: the keys before block ``j`` are over-weighted by
      ``K_j = 2**(dn_clamp - dn_j)`` with ``dn_j >= n_j^lo - n_{j-1}^hi``, ``n`` bounded
      at BOTH ends of the jump from the score interval of the running max (the kernel's
      own ``rna(fl(-m RECIP_LN2))``). Added as the absolute term
      ``sum_i w_i (1 + alpha_i) (K_i - 1) |V_i|`` (``K_i`` the product over the clamped
      blocks after key ``i``'s), evaluated as ``exp(s_i - lse + ln K_i)``: finite even
      when ``w_i`` underflows; the P cast's absolute (subnormal) term of those keys is
      multiplied by ``K_i`` as well. ``amla_guarded`` (which multiplies where the add would be
      clamped) and policies without a clamp get none.
    * the final division: ``u`` (``O / l``), ``gamma_2`` for AMLA (``O / fl(l r^)``).
    * underflow (absolute): each rounding into a subnormal range costs that format's
      smallest subnormal: the exp, the fold and the cast per key, the P V output and
      O's storage per block, ``a_j`` and l per change block; a block FMA's alignment
      floor per tile and per score (a subnormal operand or accumulator aligns to the raw
      exponent -126).

    The probabilistic bound (``kind="probabilistic"``) keeps every systematic term linear
    (AMLA's bias, its compensation mismatch, the clamp, ``a_j``'s error, the scale's
    rounding), counts the per-block roundings as ``LAMBDA sqrt(n)`` (Higham & Mary 2019)
    and adds the per-key independent roundings (exp, cast, fold, dot products) over the
    keys in quadrature: it holds with high probability under that model, not always, so
    a ratio above 1 against it is reported, never fatal. Hazards of the integer add
    (zero, subnormal, underflow, sign borrow, overflow) are outside the model: the
    report excludes the elements they touch.
    """
    variant = check_variant(variant)
    for arg, value in (("head_dim", head_dim), ("kv_len", kv_len), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"argument {arg!r} must be an integer >= 1, got {value!r}")
    c = check_c(c)
    tau = tau_log2(variant, check_tau(default_tau(variant) if tau is None else tau))
    pol = _resolve_policy(policy, variant)
    work = get_format(pol.work)
    u = work.unit_roundoff
    sp = spec(variant)
    amla = sp.is_amla
    u_cast = _cast_u(pol.p_cast, pol.p_cast_rounding)
    sigma_cast = _sigma(pol.p_cast)
    if not _contains(pol.pv.in_format, pol.p_cast or pol.work):  # P re-rounded for the matmul
        u_in = get_format(pol.pv.in_format).unit_roundoff
        u_cast = u_cast + u_in * (1.0 + u_cast)
        sigma_cast = sigma_cast * (1.0 + u_in) + _sigma(pol.pv.in_format)
    u_r = 0.0
    if amla and sp.fold != "r_fp32" and pol.r_cast is not None:
        u_r = _cast_u(pol.r_cast, pol.r_cast_rounding)
    fa_bf16 = sp.o_storage == "bf16" and pol.o_lowp is not None
    u_o = _cast_u(pol.o_lowp, pol.o_lowp_rounding) if fa_bf16 else 0.0
    b = int(block_n) if sp.tiled else int(kv_len)
    blocks = -(-int(kv_len) // int(block_n)) if sp.tiled else 1
    qk_gamma = _matmul_gamma(pol.qk.accumulation, int(head_dim), pol.qk.out_format)
    pv_gamma = _matmul_gamma(pol.pv.accumulation, b, pol.pv.out_format)
    rowsum_gamma = _accumulation_gamma(pol.rowsum, b, u)
    exp_u, exp_slope = (u, 0.0) if pol.exp == "cr" else (8.0 * u, 2.0 * u)
    sigma_work = work.min_subnormal
    if sp.softmax == "fa4" and pol.work == "fp32":
        # FA4's exp2 (docs/numerics.md section 13): FA4_EX2_REL_ERR for x >= -126; the
        # FMA's and c's roundings (2u |x| in nats: exp_slope) and that of fl(m c) (u |m|,
        # inside the score's systematic 2u |s| plus u |s - m|); below 2**-126 the result is
        # a subnormal pattern or 0, off by < 2**-126: sigma_work raised to 2**-125 (it only
        # enlarges every subnormal term)
        from amla_numerics.flash.fa4 import FA4_EX2_REL_ERR

        exp_u, exp_slope = FA4_EX2_REL_ERR, 2.0 * u
        sigma_work = max(sigma_work, 2.0**-125)
    p_sat, p_scale_abs, sigma_cast, u_cast = _p_scale_terms(
        pol, variant, float(tau), sigma_cast, u_cast
    )
    s_w = float(np.float32(pol.p_scale)) if pol.work == "fp32" else float(pol.p_scale)
    p_min_normal = 0.0
    if pol.p_cast is not None:
        p_min_normal = get_format(pol.p_cast).min_normal
        if not _contains(pol.pv.in_format, pol.p_cast):
            p_min_normal = max(p_min_normal, get_format(pol.pv.in_format).min_normal)
        p_min_normal /= s_w
    # a stale max lets P reach 2**tau (tau in log2 units for every stale-max variant)
    p_top = 2.0 ** (float(tau) + 1.0) if sp.stale_max is not None else 1.0
    if amla:
        p_top *= math.sqrt(2.0) * (1.0 + 2.0**-7)
    qk_align = _align_floor(pol.qk.accumulation, int(head_dim), pol.qk.out_format) * (
        1.0 + qk_gamma
    )
    # per tile, in the P frame: the scaled tile's floor divided by S
    pv_unit = _align_floor(pol.pv.accumulation, b, pol.pv.out_format) * (1.0 + pv_gamma) / s_w
    consts = _work_constants(pol.work)
    c_w, bias_w = consts["round"](c), consts["round"](float(pol.eps_bias))
    # AMLA's residual r = exp(fl(fl(fl(m RECIP) + n) LN2)): |ln(r / (e**m 2**n))| <= eta
    rho_r, rho_l = consts["recip_err"], consts["ln2_err"]
    t3_max = 0.5 * _LN2 * (1.0 + rho_l) * (1.0 + u) + work.min_subnormal
    d_exp = exp_u + exp_slope * t3_max
    eta_slope = rho_r + u * (1.0 + rho_r)
    eta_const = (
        0.5 * _LN2 * (rho_l + u * (1.0 + rho_l)) + 2.0 * work.min_subnormal - math.log1p(-d_exp)
    )
    r_min, r_max = 1.0, 1.0
    if amla:
        r_lo, r_hi = math.exp(-t3_max) * (1.0 - d_exp), math.exp(t3_max) * (1.0 + d_exp)
        u_rc = _cast_u(pol.r_cast, pol.r_cast_rounding) if sp.fold != "r_fp32" else 0.0
        r_min, r_max = r_lo * (1.0 - u_rc), r_hi * (1.0 + u_rc)
    clamp = pol.dn_clamp if amla else None
    if sp.guard and pol.rescale == "int_add":
        clamp = None  # the guard multiplies by the exact 2**dn where the add would clamp
    nu0 = 0
    if amla and pol.rescale == "int_add" and sp.compensation == "additive":
        nu0 = int(consts["rna_units"](bias_w))
    bound = Bound(
        variant=variant,
        head_dim=int(head_dim),
        kv_len=int(kv_len),
        block_n=int(block_n),
        blocks=blocks,
        u_work=u,
        u_cast=u_cast,
        u_r=u_r,
        qk_in=pol.qk.in_format,
        pv_in=pol.pv.in_format,
        u_o=u_o,
        qk_gamma=qk_gamma,
        pv_gamma=pv_gamma,
        rowsum_gamma=rowsum_gamma,
        exp_u=exp_u,
        exp_slope=exp_slope,
        c=c_w,
        eps_bias=bias_w,
        tau=float(tau),
        dn_clamp=clamp,
        rescale=pol.rescale,
        work=pol.work,
        exp_model=pol.exp,
        r_cast=None if sp.fold == "r_fp32" else pol.r_cast,
        r_cast_rounding=pol.r_cast_rounding,
        bias_units=nu0,
        eta_slope=eta_slope if amla else 0.0,
        eta_const=eta_const if amla else 0.0,
        r_hat_min=r_min,
        r_hat_max=r_max,
        sigma_work=sigma_work,
        sigma_cast=sigma_cast,
        sigma_o=_sigma(pol.o_lowp) if fa_bf16 else 0.0,
        sigma_pv_out=_pv_sigma(pol.pv.accumulation, pol.pv.out_format),
        qk_biased=_biased(pol.qk.accumulation),
        pv_biased=_biased(pol.pv.accumulation),
        p_saturate=p_sat,
        p_scale_abs=p_scale_abs,
        p_min_normal=p_min_normal,
        kv_order=pol.kv_order if sp.tiled else "forward",
        qk_align=qk_align,
        pv_align=pv_unit,
        pv_align_const=max(1.0, s_w * p_top),
    )
    nu_rel = abs(nu0) * 2.0**-23
    terms = {
        "exp": exp_u,
        "fold": u if amla else 0.0,
        "cast": u_cast,
        "pv": pv_gamma,
        "rowsum": rowsum_gamma,
        "bias_step": nu_rel * (1.0 + nu_rel),
        "rescale_step": float(
            (1.0 + _rho_a(bound, 0.0)) * math.exp(2.0 * bound.eta_const) - 1.0 if amla else 0.0
        ),
        "division": _gamma(2, u) if amla else u,
    }
    return dataclasses.replace(bound, terms=terms)


def _resolve_policy(policy: Any, variant: str):
    # the policy record and the variant's FP8 P cast (flash.fp8), not the emulator
    from amla_numerics.flash.fp8 import variant_policy
    from amla_numerics.flash.policy import get_policy

    return variant_policy(get_policy(policy), variant)
