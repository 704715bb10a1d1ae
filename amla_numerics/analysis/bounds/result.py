"""The per-stage constants of a variant's bound: :class:`Bound`.

:func:`~amla_numerics.analysis.bounds.a_priori_bound` returns it; every field is one term
of ``docs/bounds.md`` sections 2-6 (the stage each belongs to is named in the field's
description).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amla_numerics.analysis.bounds.arith import _gamma
from amla_numerics.variants import DEFAULT_C, DEFAULT_TAU, spec

__all__ = ["Bound"]


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
        A block FMA's alignment floor (``accumulation._align_floor``): the absolute error of one
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
