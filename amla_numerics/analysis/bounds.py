"""Rigorous error bounds for every rescaling variant, per output element.

Each variant's error is bounded as a sum of per-key relative perturbations of the softmax
weights, one per rounding (or compensation) stage, chained over the KV blocks, plus a few
absolute terms (underflow, the ``dn`` clamp). The constants come from the
:class:`~amla_numerics.flash.policy.Policy` the bound is for (its formats, roundings,
accumulation models, clamp and bias): :func:`a_priori_bound` returns them as a
:class:`Bound`. :func:`elementwise_bound` evaluates the bound on inputs: it reads the exact
(float64) scores to find, per row, the KV blocks where the running max can change (the
only blocks where a rescale does anything but round, and the only ones where AMLA's
compensation mismatch or its ``dn`` clamp act), and returns an absolute bound per output
element. The bound is never NaN; it is ``+inf`` only on rows with no attended key (the
output is undefined there) or where a relative weight error exceeds ``e**709``.
The derivation is ``docs/bounds.md``; the Notes of :func:`a_priori_bound` summarise it.

Examples
--------
>>> b = a_priori_bound("fa_fp32", head_dim=128, kv_len=2048, block_n=512)
>>> b.blocks, b.u_work == 2.0**-24, b.u_cast == 2.0**-8
(4, True, True)
>>> b.coefficient("cast") == 2.0**-8
True
>>> rng = np.random.default_rng(0)
>>> q = rng.standard_normal((2, 128))
>>> k, v = rng.standard_normal((2048, 128)), rng.standard_normal((2048, 128))
>>> eb = elementwise_bound(b, q, k, v, 128**-0.5)
>>> eb.shape, bool(np.all(eb > 0))
((2, 128), True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from amla_numerics.flash.accumulate import Accumulation
from amla_numerics.flash.checks import check_inputs  # the emulator's argument checks
from amla_numerics.formats import get_format
from amla_numerics.rounding import round_to
from amla_numerics.variants import (
    DEFAULT_C,
    DEFAULT_TAU,
    check_c,
    check_tau,
    check_variant,
    default_tau,
    spec,
    tau_log2,
)

__all__ = [
    "LAMBDA",
    "Bound",
    "BoundInputs",
    "a_priori_bound",
    "bound_inputs",
    "elementwise_bound",
    "score_error",
    "softmax_weights",
]

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


def _accumulation_gamma(model: str, n: int, u: float) -> float:
    """Relative error bound (times the sum of |terms|) of one accumulated sum of ``n`` terms.

    "exact": one rounding (u); "pairwise": ceil(log2 n) + 1 roundings; "fp32_seq"/"seq": n;
    "block_fma": see :func:`_matmul_gamma` (this generic form, 2 gamma_n, is kept for
    callers that know only the model's name).
    """
    if model == "exact":
        return u
    if model == "pairwise":
        return _gamma(math.ceil(math.log2(max(n, 1))) + 1, u)
    if model in ("fp32_seq", "seq"):
        return _gamma(n, u)
    if model == "block_fma":
        return 2.0 * _gamma(n, u)
    raise ValueError(f"unknown accumulation model {model!r}")


def _matmul_gamma(acc: Accumulation, n: int, out_format: str) -> float:
    """Relative error bound (times ``sum |a_k b_k|``) of one ``n``-term matrix-unit sum.

    Models other than ``block_fma``: :func:`_accumulation_gamma` with ``out_format``'s ``u``.
    ``block_fma`` (:mod:`~amla_numerics.flash.accumulate`; the accumulator has ``t =
    acc_bits`` bits, ``F = t - 1 + extra_bits`` alignment bits, blocks of ``nb`` products):
    block ``j`` adds ``c`` and at most ``nb`` products, each cut to the grid ``2**(eta -
    F)`` with an error below one grid step (half a step for rne), where ``2**eta <= max
    |term|`` (raw exponents of normal operands do not exceed the true ones), so the block's
    alignment error is at most ``alpha max|term|``, ``alpha = (nb + 1) 2**-F`` (rz; half for
    rne), and ``max|term| <= |c| + sum_block |a_k b_k|``; the result is then rounded to
    ``t`` bits, relative error ``r = 2**(1 - t)`` (rz) or ``2**-t`` (rne). By induction over
    the ``m = ceil(n / nb)`` blocks, ``|s_m - S| <= ((1 + r)^m (1 + alpha)^m - 1) sum |a_k
    b_k|``. Assumes normal operands (a subnormal one, whose raw exponent is its format's
    emin, can make ``2**eta`` exceed the largest term; the emulator passes BF16's emin, for
    which every value it multiplies is normal).
    """
    out = get_format(out_format)
    if acc.model != "block_fma":
        return _accumulation_gamma(acc.model, n, out.unit_roundoff)
    t = out.p if acc.acc_bits is None else acc.acc_bits
    frac = t - 1 + acc.extra_bits
    nb = min(acc.block, max(n, 1))
    alpha = (nb + 1) * 2.0**-frac * (0.5 if acc.align_rounding == "rne" else 1.0)
    r = 2.0 ** (1 - t) if acc.out_rounding == "rz" else 2.0**-t
    m = -(-max(n, 1) // acc.block)
    return math.expm1(m * (math.log1p(r) + math.log1p(alpha))) * _F64_SLACK


#: The block FMA's alignment floor: the smallest raw exponent of an operand (the emulator
#: passes BF16's, :data:`~amla_numerics.flash.accumulate.EMIN`) and of the accumulator
#: ``c`` (FP32's), as a power of two.
_ALIGN_EMIN = 2.0**-126


def _align_floor(acc: Accumulation, n: int, out_format: str) -> float:
    """Absolute error of one ``n``-term block-FMA sum beyond :func:`_matmul_gamma`'s
    relative one, per unit of ``max(1, |a|_max, |b|_max)`` (0 for the other models).

    A subnormal operand's raw exponent is the floor ``emin`` (not its own), and so is a
    subnormal accumulator's: the block's alignment exponent obeys ``2**eta <= max(max
    |term|, t, max_k max(|a_k|, t) max(|b_k|, t))`` rather than ``2**eta <= max |term|``,
    (``t = 2**-126``), and ``max(|a|, t) max(|b|, t) <= max(|a b|, t max(|a|, |b|, t))``.
    So each of the ``m = ceil(n / nb)`` blocks adds at most ``alpha t max(1, |a|_max,
    |b|_max)`` (for ``t <= 1``) on top of the relative term, ``alpha = (nb + 1) 2**-F``
    (half for rne), as in :func:`_matmul_gamma`.
    """
    if acc.model != "block_fma":
        return 0.0
    out = get_format(out_format)
    t = out.p if acc.acc_bits is None else acc.acc_bits
    frac = t - 1 + acc.extra_bits
    nb = min(acc.block, max(n, 1))
    alpha = (nb + 1) * 2.0**-frac * (0.5 if acc.align_rounding == "rne" else 1.0)
    m = -(-max(n, 1) // acc.block)
    return m * alpha * _ALIGN_EMIN * _F64_SLACK


def _biased(acc: Accumulation) -> bool:
    """True when a sum's errors can all have one sign (a directed rounding somewhere):
    the probabilistic bound's mean-zero model does not hold, the worst case is kept."""
    return acc.out_rounding == "rz" or (acc.model == "block_fma" and acc.align_rounding == "rz")


def _pv_sigma(acc: Accumulation, out_format: str) -> float:
    """Spacing of the P V result in its subnormal range: the output format's, or that of a
    reduced block-FMA accumulator (``2**(emin - acc_bits + 1)``)."""
    fmt = get_format(out_format)
    if acc.model == "block_fma" and acc.acc_bits is not None:
        return max(fmt.min_subnormal, fmt.min_normal * 2.0 ** (1 - acc.acc_bits))
    return fmt.min_subnormal


def _cast_u(fmt: str | None, mode: str) -> float:
    """Relative error bound of one cast to ``fmt`` in ``mode`` (0: no cast)."""
    if fmt is None:
        return 0.0
    u = get_format(fmt).unit_roundoff
    return 2.0 * u if mode in ("rz", "ru", "rd") else u


def _sigma(fmt: str | None) -> float:
    """Absolute error bound of one rounding into ``fmt``'s subnormal range (its spacing)."""
    return 0.0 if fmt is None else get_format(fmt).min_subnormal


@dataclass(frozen=True)
class Bound:
    """Per-stage constants of a variant's error bound (see :func:`a_priori_bound`).

    Attributes
    ----------
    variant : str
    head_dim, kv_len, block_n, blocks : int
        ``blocks = ceil(kv_len / block_n)`` (1 for ``naive``).
    u_work, u_cast, u_r, u_o : float
        Unit roundoffs of the vector stages, of the P cast as the matrix unit sees it (the
        cast, plus the rounding to the P V input format when the cast's values do not all
        fit it; 0: neither), of AMLA's r^ cast (0: r^ = r) and of O between blocks
        (``fa_bf16``; 0 otherwise); a directed cast counts twice its format's ``u``.
    sigma_work, sigma_cast, sigma_o, sigma_pv_out : float
        Absolute errors of one rounding into the subnormal range of the work format, of
        the P cast (and P V input re-rounding), of O's storage format and of the P V
        product's output format (each format's smallest subnormal).
    qk_in, pv_in : str
        The matrix unit's input formats: inputs not representable in them are rounded
        (:func:`elementwise_bound` checks and charges that).
    qk_gamma : float
        Relative bound of one QK^T dot product (times ``sum |q||k|``).
    pv_gamma, rowsum_gamma : float
        Relative bounds of one block's P V tile and one block's row sum.
    exp_u, exp_slope : float
        Relative error of the exponential of ``x``: ``exp_u + exp_slope |x|`` (``u`` and 0
        when correctly rounded; ``8u`` and ``2u`` for the polynomial exp2 model).
    c : float
        AMLA's compensation coefficient (as the work format holds it).
    eps_bias : float
        The constant added to AMLA's ``eps`` (the policy's, as the work format holds it).
    tau : float
        Stale-max threshold in log2 units (``skip_scale``'s nats converted by
        :func:`~amla_numerics.variants.tau_log2`).
    dn_clamp : int or None
        The clamp of ``dn`` that this variant's rescale applies (None: none applies).
    rescale : str
        The policy's AMLA rescale (``"int_add"`` or ``"exact"``).
    work, exp_model, r_cast, r_cast_rounding : str
        The policy's work format, exp model and r^ cast (AMLA's scalars are recomputed
        from them on the score intervals: see :func:`elementwise_bound`).
    bias_units : int
        ``nu_0``: the integer AMLA adds to O's bits at a block where the row max does not
        change (``rna(fl(eps_bias) 2**23)``: 8 for the kernel's 1e-6; 0 without it).
    eta_slope, eta_const : float
        ``|ln(r / (e**m 2**n))| <= eta_slope |m| + eta_const``: the error of AMLA's FP32
        residual ``r`` (from the rounded constants ``LN2``, ``RECIP_LN2`` and the exp).
    r_hat_min, r_hat_max : float
        Bounds of ``r^`` (1 for the FA variants).
    p_saturate : bool
        Whether the P cast may saturate (an FP8 ``p_cast`` with ``p_scale`` times the
        largest tile value above its ``max_finite``): a saturated value lies in
        ``[0, X]``, a relative error up to 1 on top of the others (``1 + alpha`` doubles).
    p_scale_abs : float
        Absolute error per output element and block of the removal of a static P scale
        (``fl(PV' / S)`` rounding into the work format's subnormals; 0 when ``S = 1``).
    p_min_normal : float
        The smallest normal of the P cast's format (and of the P V input format when it
        re-rounds), divided by the static scale: a tile value known to be at least this
        (in its block's frame) takes no absolute cast error (0: every key may).
    qk_align, pv_align, pv_align_const : float
        A block FMA's alignment floor (:func:`_align_floor`): the absolute error of one
        score is at most ``qk_align max(scale, scale (|q|_1 + |k|_1))`` beyond
        ``qk_gamma``'s, that of one P V tile ``pv_align max(pv_align_const, max|V|)``
        beyond ``pv_gamma``'s (``pv_align_const = max(1, S p_top)``, ``p_top`` the largest
        tile value, ``S`` the static P scale; 0 for the other accumulation models).
    kv_order : {"forward", "reverse"}
        The policy's block visit order; :func:`elementwise_bound` evaluates a reverse run on
        the keys reversed (and front-padded with masked keys to whole blocks), which is the
        same recurrence visited forward.
    terms : dict
        Named constants (documentation, the report, tests): ``exp``, ``fold``, ``cast``,
        ``pv``, ``rowsum``, ``division``, ``bias_step`` (the relative change of O at a
        block where the max does not move), ``rescale_step`` (the compensation mismatch
        at a block where it moves, for ``|m| = 0`` and ``dn = 0``).
    """

    variant: str
    head_dim: int
    kv_len: int
    block_n: int
    blocks: int
    u_work: float
    u_cast: float
    u_r: float
    u_o: float
    qk_in: str
    pv_in: str
    qk_gamma: float
    pv_gamma: float
    rowsum_gamma: float
    exp_u: float
    exp_slope: float
    c: float = DEFAULT_C
    eps_bias: float = 1e-6
    tau: float = DEFAULT_TAU
    dn_clamp: int | None = -30
    rescale: str = "int_add"
    work: str = "fp32"
    exp_model: str = "cr"
    r_cast: str | None = "bf16"
    r_cast_rounding: str = "rna"
    bias_units: int = 0
    eta_slope: float = 0.0
    eta_const: float = 0.0
    r_hat_min: float = 1.0
    r_hat_max: float = 1.0
    sigma_work: float = 0.0
    sigma_cast: float = 0.0
    sigma_o: float = 0.0
    sigma_pv_out: float = 0.0
    p_saturate: bool = False
    p_scale_abs: float = 0.0
    p_min_normal: float = 0.0
    kv_order: str = "forward"
    qk_biased: bool = False
    pv_biased: bool = False
    qk_align: float = 0.0
    pv_align: float = 0.0
    pv_align_const: float = 0.0
    terms: dict[str, float] = field(default_factory=dict, compare=False)

    def coefficient(self, name: str) -> float:
        """One named term (``"cast"``, ``"exp"``, ``"pv"``, ``"rescale_step"`` ...)."""
        return self.terms[name]

    @property
    def clamp(self) -> bool:
        """Whether the bound carries the ``dn`` clamp term."""
        return self.dn_clamp is not None

    @property
    def eps_max(self) -> float:
        """A priori ``|eps_j|`` (0 for the variants that apply no ``eps``)."""
        sp = spec(self.variant)
        if not sp.is_amla or self.rescale != "int_add":
            return 0.0
        if sp.compensation != "additive":
            return 0.0
        if sp.fold == "r_fp32":
            return abs(self.eps_bias)
        u = self.u_work
        dev = self._q_hi * (1.0 + _gamma(3, u)) - 1.0  # |ratio - 1|
        return (self.c * dev * (1.0 + u) + abs(self.eps_bias)) * (1.0 + u)

    @property
    def _q_hi(self) -> float:
        """Largest ``cof_{j-1} / cof_j`` (exact quotient of the exact cofs)."""
        return (1.0 + self.u_r) / (1.0 - self.u_r)

    def _rho_a(
        self,
        dn_max: np.ndarray | float,
        q_lo: np.ndarray | float | None = None,
        q_hi: np.ndarray | float | None = None,
    ) -> np.ndarray | float:
        """``a`` of AMLA's change-block mismatch ``rho = (1 + a) H - 1`` (docs/bounds.md),
        for at most ``dn_max`` binades of ``|dnc|`` and ``cof_{j-1}/cof_j`` in
        ``[q_lo, q_hi]`` (default: the a priori range); 0 for the non-AMLA variants."""
        sp, u = spec(self.variant), self.u_work
        if not sp.is_amla:
            return 0.0
        if q_lo is None or q_hi is None:
            q_lo, q_hi = 1.0 / self._q_hi, self._q_hi
        q_lo = np.asarray(q_lo, dtype=np.float64)
        q_hi = np.asarray(q_hi, dtype=np.float64)
        mult = (1.0 + _gamma(3, u)) * (1.0 + u) - 1.0  # O * ratio: ratio / q and the multiply
        nocomp = np.maximum(1.0 / q_lo - 1.0, 1.0 - 1.0 / q_hi)  # |1/q - 1|
        if self.rescale != "int_add":
            if sp.compensation == "none":
                return nocomp
            return 0.0 if sp.fold == "r_fp32" else mult
        if sp.compensation == "none":
            return nocomp
        if sp.compensation == "exact":
            return mult
        b_abs, e_max, c = abs(self.eps_bias), self.eps_max, self.c
        x = e_max * (1.0 + u) + u * (1.0 + np.asarray(dn_max, dtype=np.float64))
        h_hi, h_lo = 1.0 + x, 0.5 / (1.0 + x)
        if sp.fold == "r_fp32":  # ratio = 1, eps = fl(bias) exactly
            return h_hi * (b_abs + u * (b_abs + 1.0))
        kappa = np.maximum(
            np.abs(h_hi * c * (1 + u) ** 2 - 1.0), np.abs(h_lo * c * (1 - u) ** 2 - 1.0)
        )
        dq = np.maximum(q_hi - 1.0, 1.0 - q_lo)
        base = (
            kappa * dq
            + h_hi * c * (1 + u) ** 2 * q_hi * _gamma(3, u)
            + h_hi * (b_abs * (1.0 + u) + u * (e_max + 1.0))
        )
        a = base / q_lo
        return np.maximum(a, mult) if sp.guard else a

    def _dn_coef(self, dn_max: np.ndarray | float) -> np.ndarray | float:
        """Coefficient of ``sum |dnc_j|`` (the rounding of ``fl(dnc + eps)``) in AMLA's
        mismatch, before the factor ``H``; 0 where N is formed without ``eps``."""
        sp = spec(self.variant)
        if not sp.is_amla or sp.compensation != "additive" or self.rescale != "int_add":
            return 0.0
        u = self.u_work
        x = self.eps_max * (1.0 + u) + u * (1.0 + np.asarray(dn_max, dtype=np.float64))
        q_lo = 1.0 if sp.fold == "r_fp32" else 1.0 / self._q_hi
        return (1.0 + x) * u / q_lo


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
            (1.0 + bound._rho_a(0.0)) * math.exp(2.0 * bound.eta_const) - 1.0 if amla else 0.0
        ),
        "division": _gamma(2, u) if amla else u,
    }
    return dataclasses.replace(bound, terms=terms)


def _resolve_policy(policy: Any, variant: str):
    # the policy record and the variant's FP8 P cast (flash.fp8), not the emulator
    from amla_numerics.flash.fp8 import variant_policy
    from amla_numerics.flash.policy import get_policy

    return variant_policy(get_policy(policy), variant)


def _p_scale_terms(
    pol: Any, variant: str, tau: float, sigma_cast: float, u_cast: float
) -> tuple[bool, float, float, float]:
    """The static P scale ``S`` and the FP8 saturation: (p_saturate, p_scale_abs,
    sigma_cast, u_cast). The cast sees ``fl(X S)``: its subnormal spacing is ``sigma / S``
    in the P frame; ``S != 1`` adds the multiply's and the division's roundings (``2u``
    relative, one subnormal spacing of ``W`` absolute per block). Saturation is possible
    when ``S`` times the largest tile value (1; ``2**(tau + 1)`` with a stale max; AMLA's
    ``P r^ <= 2**(1/2) (1 + 2**-7)``) exceeds the cast format's ``max_finite``."""
    work = get_format(pol.work)
    u = work.unit_roundoff
    s = float(np.float32(pol.p_scale)) if pol.work == "fp32" else float(pol.p_scale)
    p_scale_abs = 0.0
    if s != 1.0:
        u_cast = u_cast + 2.0 * u * (1.0 + u_cast)
        sigma_cast = sigma_cast / s
        p_scale_abs = work.min_subnormal
    sat = False
    if pol.p_cast is not None and get_format(pol.p_cast).name in ("e4m3", "e5m2"):
        sp = spec(variant)
        top = 2.0 ** (tau + 1.0) if sp.stale_max is not None else 1.0
        if sp.is_amla:
            top *= math.sqrt(2.0) * (1.0 + 2.0**-7)
        sat = s * top * (1.0 + 4.0 * u) > get_format(pol.p_cast).max_finite
    return sat, p_scale_abs, sigma_cast, u_cast


@lru_cache(maxsize=4)
def _work_constants(work: str) -> dict[str, Any]:
    """The kernel constants' relative errors in ``work`` and the exact rounding helpers.

    ``ln2_err = |LN2 / ln 2 - 1|`` and ``recip_err = |RECIP_LN2 ln 2 - 1|`` with
    ``LN2 = fl(ln 2)``, ``RECIP_LN2 = fl(1 / LN2)`` (as :func:`flash.stages.constants`),
    evaluated exactly with mpmath.
    """
    import mpmath

    from amla_numerics.flash.policy import Policy
    from amla_numerics.flash.stages import constants, rna_int

    pol = Policy(work=work, rescale="exact" if work != "fp32" else "int_add")
    k = constants(pol)
    dt = type(k["LN2"])
    with mpmath.workprec(200):
        ln2 = mpmath.log(2)
        ln2_err = abs(mpmath.mpf(float(k["LN2"])) / ln2 - 1)
        recip_err = abs(mpmath.mpf(float(k["RECIP_LN2"])) * ln2 - 1)
        # round the errors up to float64
        ln2_err_f = float(ln2_err) * (1 + 2.0**-50)
        recip_err_f = float(recip_err) * (1 + 2.0**-50)

    def rnd(x: float) -> float:
        return float(dt(x))

    def rna_units(eps: float) -> float:
        return float(rna_int(np.asarray(dt(eps) * k["TWO23"])))

    def n_of(m: np.ndarray) -> np.ndarray:
        """AMLA's ``n = rna(fl(-m RECIP_LN2))`` for work-format values ``m`` (-inf: 0)."""
        m = np.asarray(m, dtype=dt)
        with np.errstate(invalid="ignore", over="ignore"):
            m_eff = np.where(np.isfinite(m), m, dt(0))
            return np.asarray(rna_int(m_eff * (-k["RECIP_LN2"])), dtype=np.float64)

    return {
        "ln2_err": ln2_err_f,
        "recip_err": recip_err_f,
        "round": rnd,
        "rna_units": rna_units,
        "n_of": n_of,
        "dtype": dt,
        "k": k,
    }


def _contains(outer: str, inner: str) -> bool:
    """Whether every value of format ``inner`` is a value of format ``outer``."""
    o, i = get_format(outer), get_format(inner)
    return o.p >= i.p and o.emax >= i.emax and o.emin - o.p <= i.emin - i.p


_DTYPE_FORMATS = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64"}


def _representable(x: Any, fmt: str) -> bool:
    """Whether every value of ``x`` is a value of ``fmt`` (from the dtype when it decides)."""
    x = np.asarray(x)
    src = _DTYPE_FORMATS.get(x.dtype.name)
    if src is not None and _contains(fmt, src):
        return True
    x64 = x.astype(np.float64)
    if fmt in ("fp32", "bf16"):  # float64 -> float32 is a correctly rounded cast
        with np.errstate(over="ignore"):
            x32 = x64.astype(np.float32)
        if not np.array_equal(x32.astype(np.float64), x64):
            return False
        # BF16 = FP32 with the low 16 significand bits zero (same exponent range)
        return fmt == "fp32" or not np.any(x32.view(np.uint32) & np.uint32(0xFFFF))
    return bool(np.array_equal(np.asarray(round_to(x64, get_format(fmt)), dtype=np.float64), x64))


def _mask_parts(
    mask: Any, causal: bool, shape: tuple[int, ...]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(keep, bias)`` of ``mask``/``causal`` as the emulator reads them
    (:func:`amla_numerics.inputs.split_mask`), broadcast to ``shape`` (..., M, N)."""
    from amla_numerics.inputs import split_mask  # one meaning of a mask

    keep, bias = split_mask(mask, shape[:-2], shape[-2], shape[-1])
    if causal:
        m, n = shape[-2], shape[-1]
        tri = np.arange(n)[None, :] <= np.arange(m)[:, None] + (n - m)
        keep = tri if keep is None else keep & tri
    keep = None if keep is None else np.broadcast_to(keep, shape)
    return keep, None if bias is None else np.broadcast_to(bias, shape)


def softmax_weights(
    q: Any, k: Any, scale: float, mask: Any = None, *, causal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 scores ``scale q k^T`` and softmax weights (an approximation, for the bounds).

    ``mask`` is a boolean keep-mask or an additive float bias (``-inf`` masks), ``causal``
    the emulator's bottom-right aligned causal mask (:mod:`amla_numerics.inputs`). Masked
    scores are ``-inf`` and their weights 0; a row with no attended key has weights 0.

    Returns
    -------
    scores, weights : numpy.ndarray
        Both of shape ``(..., M, N)``.
    """
    q64 = np.asarray(q).astype(np.float64)
    k64 = np.asarray(k).astype(np.float64)
    s = float(scale) * (q64 @ np.swapaxes(k64, -1, -2))
    keep, bias = _mask_parts(mask, causal, s.shape)
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.exp(s - m)
    tot = np.sum(w, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 0.0)
    return s, w


@dataclass(frozen=True)
class BoundInputs:
    """What the bounds need of one set of inputs, computed once (see :func:`bound_inputs`).

    All arrays are float64: scores ``s`` (``-inf`` where masked), softmax weights ``w``
    (``(..., M, N)``), the magnitudes ``qk_abs = scale |q| |k|^T``, ``|v|``, ``v**2``,
    ``|out| = |w v|``, the column maxima and sums of ``|v|``, the per-row ``lse`` of the
    scores, the row/key 1-norms of q and k (for input rounding into subnormals) and
    ``|b|`` of an additive bias mask (None: none; the scores include the bias).
    """

    head_dim: int
    kv_len: int
    s: np.ndarray = field(repr=False)
    w: np.ndarray = field(repr=False)
    qk_abs: np.ndarray = field(repr=False)
    v_abs: np.ndarray = field(repr=False)
    v_sq: np.ndarray = field(repr=False)
    out_abs: np.ndarray = field(repr=False)
    v_max: np.ndarray = field(repr=False)
    qk_formats: frozenset[str] = frozenset()
    v_formats: frozenset[str] = frozenset()
    scale: float = 1.0
    lse: np.ndarray | None = field(default=None, repr=False)
    v_sum: np.ndarray | None = field(default=None, repr=False)
    qk_l1: np.ndarray | None = field(default=None, repr=False)
    masked: bool = False
    bias_abs: np.ndarray | None = field(default=None, repr=False)


#: The matrix-unit input formats checked for exact representability of the inputs.
_IN_FORMATS = ("bf16", "fp16", "fp32", "fp64")


def bound_inputs(
    q: Any,
    k: Any,
    v: Any,
    scale: float | None = None,
    *,
    mask: Any = None,
    causal: bool = False,
) -> BoundInputs:
    """Precompute the input-dependent quantities of :func:`elementwise_bound` once.

    Parameters
    ----------
    q, k, v : array_like
        ``(..., M, d)``, ``(..., N, d)``, ``(..., N, dv)`` (any real dtype; leading dims
        broadcast), finite.
    scale : float, optional
        The softmax scale (default ``1/sqrt(d)``, as the emulator's).
    mask, causal
        As :func:`amla_numerics.flash.attention` reads them.

    Raises
    ------
    ValueError, TypeError
        The emulator's checks of shapes, values and mask (one sentence naming the argument).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> bi = bound_inputs(rng.standard_normal((2, 8)), rng.standard_normal((5, 8)),
    ...                   rng.standard_normal((5, 3)), 0.35)
    >>> bi.w.shape, sorted(bi.v_formats)
    ((2, 5), ['fp64'])
    """
    inp = check_inputs(
        q, k, v, scale=scale, block_n=1, mask=mask, causal=causal, c=DEFAULT_C, tau=DEFAULT_TAU
    )
    scale = inp.scale
    q64 = np.asarray(inp.q).astype(np.float64)
    k64 = np.asarray(inp.k).astype(np.float64)
    v64 = np.asarray(inp.v).astype(np.float64)
    s = scale * (q64 @ np.swapaxes(k64, -1, -2))
    masked = inp.keep is not None
    bias_abs = None
    if inp.bias is not None:
        bias = np.broadcast_to(np.asarray(inp.bias, dtype=np.float64), s.shape)
        s = s + bias
        bias_abs = np.abs(bias)
    if inp.keep is not None:
        s = np.where(inp.keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m0 = np.where(np.isfinite(m), m, 0.0)
    w = np.exp(s - m0)
    tot = np.sum(w, axis=-1, keepdims=True)
    ok = tot > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(ok, w / np.where(ok, tot, 1.0), 0.0)
        lse = np.where(ok, m0 + np.log(np.where(ok, tot, 1.0)), -np.inf)
    v_t = np.ascontiguousarray(np.swapaxes(v64, -1, -2))  # (..., Dv, N): see _mm
    v_abs = np.swapaxes(np.abs(v_t), -1, -2)
    fits = {
        name: _representable(inp.q, name) and _representable(inp.k, name) for name in _IN_FORMATS
    }
    qa, ka = np.abs(q64), np.abs(k64)
    return BoundInputs(
        head_dim=int(q64.shape[-1]),
        kv_len=int(k64.shape[-2]),
        s=s,
        w=w,
        qk_abs=abs(scale) * (qa @ np.swapaxes(ka, -1, -2)),
        v_abs=v_abs,
        v_sq=np.swapaxes(v_t * v_t, -1, -2),
        out_abs=np.abs(_mm(w, np.swapaxes(v_t, -1, -2))),
        v_max=np.max(v_abs, axis=-2, keepdims=True),
        qk_formats=frozenset(n for n, good in fits.items() if good),
        v_formats=frozenset(n for n in _IN_FORMATS if _representable(inp.v, n)),
        scale=float(scale),
        lse=lse,
        v_sum=np.sum(v_abs, axis=-2, keepdims=True),
        qk_l1=abs(scale) * (np.sum(qa, axis=-1)[..., :, None] + np.sum(ka, axis=-1)[..., None, :]),
        masked=masked,
        bias_abs=bias_abs,
    )


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
        See the Notes of :func:`a_priori_bound`.
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


def _reverse_keys(x: BoundInputs, n_pad: int) -> BoundInputs:
    """``x`` with its keys reversed and ``n_pad - N`` masked keys in front: visiting its
    blocks forward is visiting the original blocks last to first (same boundaries)."""
    extra = n_pad - x.kv_len

    def rev(a: np.ndarray, axis: int, fill: float) -> np.ndarray:
        if a.shape[axis] == 1:
            return a
        a = np.flip(a, axis=axis)
        shape = list(a.shape)
        shape[axis] = extra
        return np.concatenate([np.full(shape, fill), a], axis=axis)

    return dataclasses.replace(
        x,
        kv_len=n_pad,
        s=rev(x.s, -1, -np.inf),
        w=rev(x.w, -1, 0.0),
        qk_abs=rev(x.qk_abs, -1, 0.0),
        v_abs=rev(x.v_abs, -2, 0.0),
        v_sq=rev(x.v_sq, -2, 0.0),
        qk_l1=None if x.qk_l1 is None else rev(x.qk_l1, -1, 0.0),
        bias_abs=None if x.bias_abs is None else rev(x.bias_abs, -1, 0.0),
        masked=x.masked or extra > 0,
    )


def _blocked(a: np.ndarray, t: int, bn: int, fill: float) -> np.ndarray:
    """(..., N) -> (..., T, B), padding the last block with ``fill``."""
    n = a.shape[-1]
    if t * bn != n:
        pad = np.full((*a.shape[:-1], t * bn - n), fill)
        a = np.concatenate([a, pad], axis=-1)
    return a.reshape(*a.shape[:-1], t, bn)


def _after(a: np.ndarray) -> np.ndarray:
    """Per block b, the sum of ``a`` over the blocks strictly after b (last axis)."""
    tot = np.cumsum(a[..., ::-1], axis=-1)[..., ::-1]
    return tot - a


def _cast_abs(
    b: Bound,
    x: BoundInputs,
    s0: np.ndarray,
    e: np.ndarray,
    fin: np.ndarray,
    m_hi: np.ndarray,
    m_lo: np.ndarray,
    bn: int,
    alpha: np.ndarray,
    common: np.ndarray,
    logk: np.ndarray | None = None,
) -> np.ndarray:
    """The P cast's absolute (below-normal) errors, summed over keys with ``|V|``, in the
    final frame. Key ``i`` of block ``j`` is cast in block ``j``'s frame, where one rounding
    into the subnormals errs by at most ``sigma_cast``; carried to the row's final max it
    shrinks by ``exp(m_j - m) <= min(1, exp(m_hi_j - m_lo_T))`` (the computed max never
    decreases; a stale max trails the true one by at most ``tau ln 2``). Where AMLA's
    ``dn`` clamp over-weights key ``i`` by ``K_i`` (``logk = ln K_i``), the carried error and
    the computed value are ``K_i`` times larger: ``min(1, exp(m_hi_j - m_lo_T + ln K_i))``
    (the clamped factor ``2**dn_clamp`` is itself at most 1). A value below the
    normal range also rounds to within ``[0, 2x]`` (two roundings: ``3x``), ``x`` the
    computed tile value: in the final frame at most ``r^_max exp(min(s_i + e_i - m_lo_T,
    stale)) (1 + alpha_i)`` (the computed final max is >= every computed score, minus
    ``stale = tau ln 2`` for a stale max). A key whose tile value is surely normal in the
    cast format (at least ``r^_min exp(s_i - e_i - m_hi_j - common_i) >= p_min_normal``
    in its block's frame, ``common_i`` the score/exp relative terms) takes none."""
    if not b.sigma_cast:
        return np.zeros(1)
    n = s0.shape[-1]
    stale = b.tau * _LN2 * (1.0 + 4 * b.u_work) if spec(b.variant).stale_max else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        lift = _to_keys(m_hi - m_lo[..., -1:] + stale, bn, n)
        x_log = s0 + e - m_lo[..., -1:]
        if logk is not None:
            lift = lift + logk
            x_log = x_log + logk
        frame = np.nan_to_num(np.exp(np.minimum(lift, 0.0)), nan=1.0)
        x_fin = b.r_hat_max * np.exp(np.minimum(x_log, stale))
        x_fin = np.nan_to_num(x_fin, nan=1.0, posinf=1.0) * (1.0 + alpha)
    per = np.minimum(b.sigma_cast * frame, 3.0 * x_fin)
    if b.p_min_normal > 0:
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            x_lo = b.r_hat_min * np.exp(s0 - e - _to_keys(m_hi, bn, n) - common)
        per = np.where(np.nan_to_num(x_lo, nan=0.0) >= b.p_min_normal, 0.0, per)
    per = np.where(fin, per, 0.0)
    return _weighted_sum(per, x.v_abs)


def _to_keys(a: np.ndarray, bn: int, n: int) -> np.ndarray:
    """(..., T) per-block values -> (..., N) per key."""
    return np.repeat(a, bn, axis=-1)[..., :n]


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for ``a`` (..., M, N) and ``b`` (..., N, Dv), computed as ``(b^T a^T)^T``:
    the same sums, but a long ``N`` as the inner dimension of a BLAS product with the
    small ``M`` outside is pathologically slow under multithreaded OpenBLAS on a loaded
    machine (seconds instead of milliseconds); ``b`` is best a transposed view of a
    C-contiguous (..., Dv, N) array (as :func:`bound_inputs` stores ``|v|``)."""
    return np.swapaxes(np.swapaxes(b, -1, -2) @ np.swapaxes(a, -1, -2), -1, -2)


def _weighted_sum(wa: np.ndarray, v_abs: np.ndarray) -> np.ndarray:
    """``wa @ v_abs`` where an infinite (or undefined 0 * inf) ``wa`` entry meeting a
    non-zero ``|V|`` gives +inf and meeting a zero gives 0 (never NaN)."""
    bad = ~np.isfinite(wa)
    if not bad.any():
        return _mm(wa, v_abs)
    res = _mm(np.where(bad, 0.0, wa), v_abs)
    hit = _mm(bad.astype(np.float64), (v_abs > 0).astype(np.float64)) > 0
    return np.where(hit, np.inf, res)


def _times(a: Any, b: Any) -> np.ndarray:
    """``a * b`` with ``0 * inf = 0`` (a zero factor is an exact zero here)."""
    with np.errstate(invalid="ignore"):
        r = np.multiply(a, b)
    return np.where(np.isnan(r), 0.0, r)


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


def _evaluate(b: Bound, x: BoundInputs, prob: bool) -> np.ndarray:
    u, n_keys = b.u_work, x.kv_len
    s, w = x.s, x.w
    fin = np.isfinite(s)  # attended keys
    s0 = np.where(fin, s, 0.0)
    sp = spec(b.variant)
    amla = sp.is_amla
    lazy = sp.stale_max is not None  # a stale max: P up to 2**tau

    def count(n: np.ndarray | float) -> np.ndarray | float:
        """n roundings of size u: n (deterministic) or LAMBDA sqrt(n) (probabilistic)."""
        return np.minimum(n, LAMBDA * np.sqrt(n)) if prob else n

    e, s_qk = score_error(b, x, prob)
    E = np.max(e, axis=-1, keepdims=True)  # (..., M, 1)
    any_key = np.any(fin, axis=-1, keepdims=True)
    smax = np.max(np.where(fin, s, -np.inf), axis=-1, keepdims=True)
    smax0 = np.where(any_key, smax, 0.0)

    # --- per block: can the running max change? bounds of m_j
    t_blk = b.blocks
    bn = b.block_n if sp.tiled else n_keys
    hi_blk = np.max(_blocked(np.where(fin, s + e, -np.inf), t_blk, bn, -np.inf), axis=-1)
    lo_blk = np.max(_blocked(np.where(fin, s - e, -np.inf), t_blk, bn, -np.inf), axis=-1)
    m_hi = np.maximum.accumulate(hi_blk, axis=-1)  # m_j <= m_hi_j
    m_lo = np.maximum.accumulate(lo_blk, axis=-1)  # m_j >= m_lo_j
    chg = np.zeros(hi_blk.shape, dtype=bool)
    chg[..., 1:] = hi_blk[..., 1:] > m_lo[..., :-1]
    chg_f = chg.astype(np.float64)
    chg_after = _after(chg_f)  # (..., M, T): change blocks after block b
    later = np.arange(t_blk - 1, -1, -1, dtype=np.float64)  # blocks after block b
    nochg_after = later - chg_after
    # sum_{j > b} |dm_j| <= m_T - m_b (monotone); lazy's stale max trails by <= tau ln 2
    with np.errstate(invalid="ignore"):
        d_after = np.where(
            (chg_after > 0) & np.isfinite(m_lo),
            m_hi[..., -1:] - m_lo + (b.tau * _LN2 * (1.0 + 4 * u) if lazy else 0.0),
            0.0,
        )
    n_chg_row = np.sum(chg_f, axis=-1, keepdims=True)

    # --- AMLA: n at both ends of every jump, the clamp, the compensation mismatch
    rho_key: Any = 0.0
    dn_key: Any = 0.0
    logk_key: np.ndarray | None = None
    if amla:
        consts = _work_constants(b.work)
        dt = consts["dtype"]
        n_of = consts["n_of"]
        with np.errstate(over="ignore", invalid="ignore"):
            lo_w = np.asarray(m_lo, dtype=dt)  # round to the work format, then outward
            lo_w = np.where(lo_w < m_lo, np.nextafter(lo_w, dt(np.inf)), lo_w)
            hi_w = np.asarray(m_hi, dtype=dt)
            hi_w = np.where(hi_w > m_hi, np.nextafter(hi_w, dt(-np.inf)), hi_w)
        started = np.isfinite(m_hi)  # some attended key in blocks <= j
        n_hi = np.where(started, n_of(lo_w), 0.0)  # n is non-increasing in m
        n_lo = np.where(started, n_of(hi_w), 0.0)
        dn_lo = np.zeros_like(n_lo)
        dn_hi = np.zeros_like(n_lo)
        dn_lo[..., 1:] = n_lo[..., 1:] - n_hi[..., :-1]
        dn_hi[..., 1:] = n_hi[..., 1:] - n_lo[..., :-1]
        old = np.zeros_like(chg)
        old[..., 1:] = started[..., :-1]  # keys before block j exist
        dn_abs = np.where(chg & old, np.maximum(-dn_lo, dn_hi), 0.0)
        if b.dn_clamp is not None:
            dn_abs = np.minimum(dn_abs, abs(b.dn_clamp))
        dn_max = np.max(dn_abs, axis=-1, keepdims=True)
        absm = np.max(np.where(fin, np.abs(s) + e, 0.0), axis=-1, keepdims=True)
        eta = b.eta_slope * absm + b.eta_const
        h_fac = np.exp(2.0 * eta)  # H = (1 + eta_{j-1}) / (1 + eta_j) <= e**(2 eta)
        q_lo, q_hi = _cof_quotients(b, consts, lo_w, hi_w, n_lo, n_hi, started)
        rho = (1.0 + b._rho_a(dn_max, q_lo, q_hi)) * h_fac - 1.0  # (..., M, T)
        rho_key = _to_keys(_after(np.where(chg, rho, 0.0)), bn, n_keys)
        dn_key = _to_keys(_after(dn_abs), bn, n_keys) * (b._dn_coef(dn_max) * h_fac)
        if b.dn_clamp is not None:
            clamped = chg & old & (dn_lo < b.dn_clamp)
            if clamped.any():
                logk = np.where(clamped, (b.dn_clamp - dn_lo) * _LN2, 0.0)
                logk_key = _to_keys(_after(logk), bn, n_keys)

    # --- per-key first-order relative terms: t = t_ind (per key) + t_blk (per block)
    #     + t_sys (systematic); numerator and denominator
    span = np.where(fin, smax0 - s0, 0.0) + E + e + (b.tau * _LN2 * (1.0 + 4 * u) if lazy else 0.0)
    e_sys = (2.0 * u + u * u) * np.abs(s_qk)  # the scale's rounding (and the product's): linear
    common_ind = e - e_sys + (u + b.exp_slope) * span + b.exp_u
    v_in = 0.0 if b.pv_in in x.v_formats else get_format(b.pv_in).unit_roundoff
    num_ind = common_ind + b.terms["fold"] + b.u_cast + v_in
    blk_idx = np.arange(n_keys) // bn
    own = (blk_idx > 0).astype(np.float64)  # key i's tile is added to an existing O
    pv = _prob_scale(b.pv_gamma, bn, u) if prob and not b.pv_biased else b.pv_gamma
    rowsum = _prob_scale(b.rowsum_gamma, bn, u) if prob else b.rowsum_gamma
    ca = _to_keys(chg_after, bn, n_keys)
    na = _to_keys(nochg_after, bn, n_keys)
    da = _to_keys(d_after, bn, n_keys)
    # a_j = exp(fl(m_{j-1} - m_j)) at change blocks: exp_u + (u + exp_slope) |dm_j| each
    a_err = ca * b.exp_u + (u + b.exp_slope) * da
    num_blk: Any
    den_blk: Any
    num_sys: Any
    den_sys: Any
    if not sp.tiled:
        num_blk = np.full_like(s0, pv)
        den_blk = np.full_like(s0, rowsum)
        num_sys = np.zeros_like(s0)
        den_sys = np.zeros_like(s0)
    elif amla:
        num_blk = pv + count(own) * u + count(na + ca) * u
        den_blk = rowsum + count(own) * u + count(na) * u + count(ca) * 2.0 * u
        num_sys = na * b.terms["bias_step"] + rho_key + dn_key
        den_sys = a_err
    else:  # fa_fp32, fa_bf16, lazy: a_j scales O and l alike, but not the new keys
        later_k = na + ca
        num_blk = pv + count(own) * u + count(na) * u + count(ca) * 2.0 * u
        num_blk = num_blk + count(later_k + 1.0) * b.u_o
        den_blk = rowsum + count(own) * u + count(na) * u + count(ca) * 2.0 * u
        num_sys = a_err
        den_sys = a_err
    num_sys = num_sys + e_sys
    den_sys = den_sys + e_sys
    t_num = num_ind + num_blk + num_sys
    t_den = common_ind + den_blk + den_sys
    with np.errstate(over="ignore"):
        alpha = np.where(fin, np.expm1(t_num), 0.0)
        if b.p_saturate:  # a saturated cast lies in [0, X]: (1 + alpha) doubles
            alpha = np.where(fin, 1.0 + 2.0 * alpha, 0.0)
        beta = np.where(fin, np.expm1(t_den), 0.0)

    # --- assemble: numerator, denominator, the clamp, the division
    wa = _times(w, alpha)
    wa = np.where(fin & (w == 0) & np.isinf(alpha), np.inf, wa)
    wb = _times(w, beta)
    wb = np.where(fin & (w == 0) & np.isinf(beta), np.inf, wb)
    if prob:
        infl_n = np.where(t_num > 0, alpha / np.where(t_num > 0, t_num, 1.0), 1.0)
        infl_d = np.where(t_den > 0, beta / np.where(t_den > 0, t_den, 1.0), 1.0)
        wi = _times(w, num_ind * infl_n)
        quad = LAMBDA * np.sqrt(_weighted_sum(wi * wi, x.v_sq))
        bnum = np.minimum(_weighted_sum(wi, x.v_abs), quad)
        bnum = bnum + _weighted_sum(_times(w, (num_blk + num_sys) * infl_n), x.v_abs)
        wdi = _times(w, common_ind * infl_d)
        sb_ind = np.minimum(
            np.sum(wdi, axis=-1, keepdims=True),
            LAMBDA * np.sqrt(np.sum(wdi * wdi, axis=-1, keepdims=True)),
        )
        sb_p = sb_ind + np.sum(_times(w, (den_blk + den_sys) * infl_d), axis=-1, keepdims=True)
    else:
        bnum = _weighted_sum(wa, x.v_abs)
    sb = np.sum(wb, axis=-1, keepdims=True)  # sum_i w_i |beta_i|
    lse = x.lse if x.lse is not None else np.zeros_like(E)
    with np.errstate(over="ignore", invalid="ignore"):
        # D >= e**-E / L: the computed l is >= 1 and the exact L' <= L e**E
        floor = np.exp(-E - np.where(any_key, lse - smax0, 0.0))
    den_factor = np.maximum(1.0 - sb, floor)
    bden = _times(x.out_abs, sb_p if prob else sb)
    rel = (bnum + bden) / den_factor
    if logk_key is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            wk = np.exp(np.where(fin & (logk_key > 0), s0 - lse + logk_key, -np.inf))
        rel = rel + _weighted_sum(_times(wk, 1.0 + alpha), x.v_abs) / den_factor
    div = b.terms["division"]
    total = rel * (1.0 + div) + div * x.out_abs

    # --- underflow (absolute): subnormal roundings, carried by at most 1 + alpha_max
    alpha_max = np.max(alpha, axis=-1, keepdims=True)
    carry = 1.0 + alpha_max
    sig = b.sigma_work
    per_key = sig * b.r_hat_max + (sig if amla else 0.0)
    v_sum = x.v_sum if x.v_sum is not None else np.sum(x.v_abs, axis=-2, keepdims=True)
    cast_abs = _cast_abs(b, x, s0, e, fin, m_hi, m_lo, bn, alpha, common_ind, logk_key)
    v_in_sig = 0.0 if b.pv_in in x.v_formats else get_format(b.pv_in).min_subnormal
    n_pos = float(n_keys)
    abs_num = per_key * v_sum * (1.0 + v_in) + _times(v_in_sig * n_pos * b.r_hat_max, carry)
    abs_num = abs_num + cast_abs + b.blocks * (b.sigma_pv_out + b.sigma_o + sig + b.p_scale_abs)
    if b.pv_align:  # the block FMA's alignment floor, per tile
        top = np.maximum(b.pv_align_const, x.v_max * (1.0 + v_in))
        abs_num = abs_num + b.blocks * b.pv_align * top
    # a_j (or AMLA's guard factor) rounded into the subnormals: sigma |O|, |O| <= N p_max max|V|
    p_max = 2.0 ** (b.tau + 1.0) if lazy else 1.0  # lazy's P against a stale max: <= 2**tau
    o_max = 2.0 * n_pos * x.v_max * b.r_hat_max * p_max
    abs_num = abs_num + n_chg_row * sig * (o_max + 1.0)
    abs_out = _times(carry, abs_num) / b.r_hat_min
    delta_l = sig * (n_pos + n_chg_row * (n_pos * p_max + 1.0))
    abs_out = abs_out + _times(x.out_abs + total, delta_l * (1.0 + 2.0 * u)) + sig
    total = total + abs_out
    total = np.where(any_key, total, np.inf)  # no attended key: the output is undefined
    return total * _F64_SLACK


def _cof_quotients(
    b: Bound,
    consts: dict[str, Any],
    lo_w: np.ndarray,
    hi_w: np.ndarray,
    n_lo: np.ndarray,
    n_hi: np.ndarray,
    started: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``q_j = cof_{j-1} / cof_j`` (exact cofs ``r / r^``) per row and block.

    AMLA's ``r_j`` is a monotone function of the work-format max ``m_j`` while ``n_j`` is
    constant (correctly rounded exp), so where ``n`` and the cast ``r^`` agree at both ends
    of ``m_j``'s interval, ``r^_j`` is known and ``r_j`` lies between the two end values:
    the kernel's own scalars, recomputed. Elsewhere (or with the polynomial exp, which need
    not be monotone) the a priori range ``[1/(1+u_r), 1/(1-u_r)]`` of a cof is used.
    Block 0's entry is unused.
    """
    q_top = b._q_hi
    cof_lo = np.full(lo_w.shape, 1.0 / (1.0 + b.u_r))
    cof_hi = np.full(lo_w.shape, 1.0 / (1.0 - b.u_r))
    if b.u_r > 0 and b.exp_model == "cr":
        from amla_numerics.flash.stages import cast, exp_cr

        dt, k = consts["dtype"], consts["k"]

        def r_of(m: np.ndarray, n: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", over="ignore"):
                m_eff = np.where(np.isfinite(m), m, dt(0))
                return exp_cr((m_eff * k["RECIP_LN2"] + n.astype(dt)) * k["LN2"])

        r_a, r_b = r_of(lo_w, n_hi), r_of(hi_w, n_lo)
        h_a = cast(r_a, b.r_cast, b.r_cast_rounding)
        h_b = cast(r_b, b.r_cast, b.r_cast_rounding)
        known = (n_lo == n_hi) & (h_a == h_b) & (h_a > 0)
        known &= started | ~np.isfinite(hi_w)
        ra = r_a.astype(np.float64)
        rb = r_b.astype(np.float64)
        rh = np.where(known, h_a.astype(np.float64), 1.0)
        cof_lo = np.where(known, np.minimum(ra, rb) / rh * (1 - 2.0**-50), cof_lo)
        cof_hi = np.where(known, np.maximum(ra, rb) / rh * (1 + 2.0**-50), cof_hi)
    q_lo = np.full(lo_w.shape, 1.0 / q_top)
    q_hi = np.full(lo_w.shape, q_top)
    q_lo[..., 1:] = np.maximum(cof_lo[..., :-1] / cof_hi[..., 1:] * (1 - 2.0**-50), 1.0 / q_top)
    q_hi[..., 1:] = np.minimum(cof_hi[..., :-1] / cof_lo[..., 1:] * (1 + 2.0**-50), q_top)
    return q_lo, q_hi


def _prob_scale(gamma: float, n: int, u: float) -> float:
    """Probabilistic counterpart of a gamma_n-type constant: at most LAMBDA sqrt(n) u."""
    return min(gamma, LAMBDA * math.sqrt(max(n, 1)) * u) if gamma > u else gamma
