"""A priori error bounds for every rescaling variant, per output element.

Each variant's error is bounded as a sum of per-key relative perturbations of the softmax
weights, one per rounding (or compensation) stage, chained over the KV blocks. The bound is
*a priori*: it is a function of the head dim ``d``, the KV length ``N``, the block size
``B``, the formats of the :class:`~amla_numerics.flash.policy.Policy` and magnitudes of the
data (``|q| |k|`` products, score range, ``sum_i w_i |v_i|``), never of the computed output.

:func:`a_priori_bound` returns a :class:`Bound` (the per-stage coefficients);
:func:`elementwise_bound` evaluates it on inputs, giving an absolute bound per output element.

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
from typing import Any

import numpy as np

from amla_numerics.formats import get_format
from amla_numerics.rounding import round_to
from amla_numerics.variants import (
    AMLA_VARIANTS,
    DEFAULT_C,
    DEFAULT_TAU,
    check_c,
    check_tau,
    check_variant,
)

__all__ = [
    "LAMBDA",
    "Bound",
    "BoundInputs",
    "a_priori_bound",
    "bound_inputs",
    "elementwise_bound",
    "softmax_weights",
]

#: Confidence parameter of the probabilistic bounds (Higham & Mary 2019, Theorem 2.8):
#: a sum of ``n`` independent mean-zero rounding errors each of size ``<= u`` exceeds
#: ``LAMBDA * sqrt(n) * u`` with probability at most ``2 exp(-LAMBDA**2 (1 - u)**2 / 2)``
#: (about 7.5e-6 for ``LAMBDA = 5``).
LAMBDA: float = 5.0

_LN2 = math.log(2.0)
_LOG2E = 1.0 / _LN2
#: Nats a row max must jump before the kernel's clamp of ``dn`` at -30 under-scales O.
_CLAMP_NATS = 30.0 * _LN2


def _gamma(n: float, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u) (inf when n u >= 1)."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 1.0 else math.inf


def _accumulation_gamma(model: str, n: int, u: float) -> float:
    """Relative error bound (times the sum of |terms|) of one accumulated sum of ``n`` terms.

    "exact": one rounding (u); "pairwise": ceil(log2 n) + 1 roundings; "fp32_seq"/"seq": n;
    "block_fma": truncating alignment can lose a whole unit per block, so 2 gamma_n.
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


@dataclass(frozen=True)
class Bound:
    """Per-stage coefficients of a variant's error bound (see :func:`a_priori_bound`).

    Attributes
    ----------
    variant : str
    head_dim, kv_len, block_n, blocks : int
        ``blocks = ceil(kv_len / block_n)``.
    u_work, u_cast, u_r, u_o : float
        Unit roundoffs of the vector stages, of the P cast as the matrix unit sees it (the
        cast, plus the rounding to the P V input format when the cast's values do not all
        fit it; 0: neither), of AMLA's r^ cast (0: r^ = r) and of O between blocks
        (``fa_bf16``; 0 otherwise).
    qk_in, pv_in : str
        The matrix unit's input formats: inputs not representable in them are rounded
        (:func:`elementwise_bound` checks and charges that).
    qk_gamma : float
        Relative bound of one QK^T dot product (times ``sum |q||k|``).
    pv_gamma, rowsum_gamma : float
        Relative bounds of one block's P V tile and one block's row sum.
    exp_u, exp_slope : float
        Relative error of the exponential of ``x``: ``exp_u + exp_slope |x|`` (``u`` and 0
        when correctly rounded; ``8u`` and ``2u`` for the polynomial exp2 model, whose
        ``fl(x log2 e)`` with a rounded ``log2 e`` costs ``2u |x|``: docs/numerics.md;
        ``fa4``: :data:`~amla_numerics.flash.fa4.FA4_EX2_REL_ERR` and ``2u``).
    c : float
        AMLA's compensation coefficient.
    eps_bias : float
        The constant added to AMLA's ``eps`` (1e-6 in the kernel).
    tau : float
        Lazy rescale threshold (log2 units).
    p_absolute : float
        Absolute error of one element of the P cast, in probability units (the P frame):
        half the cast format's smallest subnormal (a whole one for ``rz``) divided by the
        static scale ``S``, times ``sqrt(2) (1 + 2**-7)`` for AMLA (whose cast sees
        ``P r^`` with ``r^ >= 2**-1/2 (1 - 2**-8)``). 0 without a cast.
    p_saturate : bool
        Whether the cast may saturate (``S`` times the largest tile value above the cast
        format's ``max_finite``); then a cast value is only known to lie in ``[0, X]``.
    terms : dict
        Named numerator-side coefficients (documentation and the report).
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
    clamp: bool = True
    p_absolute: float = 0.0
    p_saturate: bool = False
    terms: dict[str, float] = field(default_factory=dict, compare=False)

    def coefficient(self, name: str) -> float:
        """One named term (``"cast"``, ``"exp"``, ``"pv"``, ``"rescale_step"`` ...)."""
        return self.terms[name]

    @property
    def eps_max(self) -> float:
        """A priori ``|eps_j|``: ``c |cof_{j-1}/cof_j - 1| + bias`` with ``|cof - 1| <= u_r``."""
        if self.variant == "amla_nocomp" or self.variant == "amla_exactcomp":
            return 0.0
        if self.variant == "amla_fp32r":
            return self.eps_bias
        ratio = (1.0 + self.u_r) / (1.0 - self.u_r) - 1.0
        return self.c * ratio * (1.0 + 4 * self.u_work) + self.eps_bias


def a_priori_bound(
    variant: str,
    *,
    head_dim: int,
    kv_len: int,
    block_n: int = 512,
    c: float = DEFAULT_C,
    tau: float = DEFAULT_TAU,
    policy: Any = None,
) -> Bound:
    """The stage coefficients of ``variant``'s error bound.

    Parameters
    ----------
    variant : str
        One of :data:`amla_numerics.variants.VARIANTS`.
    head_dim, kv_len, block_n : int
        ``d``, ``N`` and the KV block size ``B`` (each >= 1).
    c : float
        AMLA's compensation coefficient.
    tau : float
        The lazy variant's threshold (log2 units).
    policy : Policy or str, optional
        The emulator's precision policy (default ``"ascend"``): its formats and
        accumulation models set ``u_work``, ``u_cast``, ``qk_gamma``, ``pv_gamma``.

    Returns
    -------
    Bound

    Raises
    ------
    ValueError
        Unknown variant or a size below 1.

    Notes
    -----
    Write ``w_i`` for the exact softmax weights of a row, ``V_i`` for one value column,
    ``out = sum_i w_i V_i``. If the computed numerator weights are ``w_i (1 + alpha_i)`` and
    the denominator weights ``w_i (1 + beta_i)`` (both relative to the exact frame), then
    exactly ``out' - out = (sum w_i alpha_i V_i - out sum w_i beta_i) / sum w_i (1 + beta_i)``,
    so ``|out' - out| <= (sum_i w_i |alpha_i| |V_i| + |out| sum_i w_i |beta_i|)
    / (1 - max |beta|)``.
    Each ``|alpha_i|`` (``|beta_i|``) is bounded by ``t / (1 - t)`` where ``t`` is the sum of
    the first-order relative errors of every stage key ``i`` goes through (a product of
    factors ``1 + delta_k`` with ``sum |delta_k| = t < 1`` differs from 1 by at most
    ``e**t - 1 <= t / (1 - t)``). The stages, with ``u`` the work unit roundoff, ``u_c`` the
    P cast's, ``k_i`` the number of blocks after key ``i``'s and ``T`` the block count:

    * score: ``|s^_i - s_i| <= scale * g_qk * sum|q||k_i| + 2 u |s_i|`` (the dot product,
      the FP32 scale and the product); a score error ``e`` is a relative weight error
      ``e**|e| - 1``; the subtraction ``s - m`` adds ``u |s_i - m|`` (``+ tau ln 2`` for
      ``lazy``, whose stale max may lie below ``s_i``). Common to numerator and denominator.
    * ``exp``: ``u`` (correctly rounded), or ``(8 + 2 |s_i - m|) u`` for the polynomial
      exp2 model; common.
    * numerator only: the AMLA fold ``P r^`` (``u``), the cast (``u_c``; plus the P V input
      format's unit roundoff when the cast's (or, without a cast, the work format's)
      values do not all fit it, e.g. an FP16 cast fed to a BF16 matrix unit), the block's
      P V tile (``g_pv``).
    * inputs not representable in the matrix unit's input formats: ``2 u_in`` times
      ``scale sum|q||k|`` on the score, ``u_in`` on V.
    * denominator only: the block's row sum (``g_rowsum``).
    * the chain, per later block: ``fa_fp32``/``lazy``: multiply and add, ``2u`` on O and
      on l (the same computed ``a_j`` scales both and cancels); ``fa_bf16``: plus ``u_o``
      for O's storage; AMLA: the add on O (``u``) plus the rescale mismatch ``rho`` below,
      and on l ``3u`` plus ``u |dm_j|`` (l is scaled by the FP32 ``a_j = exp(m_{j-1}-m_j)``
      while O gets a power of two: the error of ``a_j`` no longer cancels; ``sum |dm_j|`` is
      at most the row's score range).
    * AMLA's rescale mismatch per step (AMLA's folding and compensation error): adding
      ``delta 2**23`` to the bits of ``x = 2**e (1 + f)`` multiplies it by
      ``1 + delta h`` with ``h in [1/2, 1]`` (``h = 1/(1+f)`` without carry; a carry or
      borrow stays in the same range), while the intended factor is ``1 + (eps - bias)/c``.
      So ``rho <= |eps| kappa(c) + bias/c + eps**2 + e_N + 2 eta`` with
      ``kappa(c) = max(|1 - 1/c|, |1/2 - 1/c|)``, ``|eps| <= c (u_c-ratio) + bias``,
      ``e_N = 2**-24 + u (|dn| + |eps|)`` (``N`` rounded to an integer, ``dn + eps`` to FP32)
      and ``eta <= u (2 |m| + 4)`` the error of the FP32 residual ``r = exp(m + n ln 2)``.
      ``amla_nocomp``: ``rho = |cof ratio - 1| + 2 eta``; ``amla_exactcomp``: ``3u + 2 eta``
      (the ratio by an FP32 multiply); ``amla_fp32r``: ``cof = 1``, ``rho = bias + e_N + 2eta``.
    * the FP8 P cast (``fa_fp8``, ``amla_fp8`` or any policy with an FP8 ``p_cast``): the
      relative ``u_c`` above holds on the cast format's normal range; below it the cast's
      error is absolute, at most ``p_absolute`` per key in the P frame (the underflow of a
      probability to 0 included). A key of block ``j`` enters the output with weight
      ``P_i exp(m_j - m) / l`` and ``exp(m_j - m) <= 1``, ``l >= L (1 - max beta)`` with
      ``L = sum exp(s - m) = 1 / max_i w_i``: so the numerator gains at most
      ``p_absolute max_i w_i sum_i |V_i| / (1 - max beta)``. With ``S != 1``: ``2u`` more
      (the multiply ``fl(X S)`` and the division of the tile by ``S``). A cast that may
      saturate has relative error up to 1 (``0 <= cast(X) <= X``): ``alpha`` becomes
      ``1 + 2 alpha``.
    * the final division: ``u`` (``O / l``), ``2u`` for AMLA (``O / (l r^)``).
    * the clamp of ``dn`` at -30: when a row max jumps by more than ``30 ln 2`` nats, the old
      O is under-scaled; its weight in the final frame is at most ``2**-30 N max|V| * 1.5``
      per jump (``l >= 1`` after a rescale, ``r^ <= 2**(1/2)``): an absolute term.
    * subnormal probabilities: an absolute ``2 N 2**-133 max|V|``.

    The probabilistic bound (``kind="probabilistic"``) replaces every count ``n`` of
    rounding errors of size ``u`` by ``LAMBDA sqrt(n)`` (Higham & Mary 2019), and the sums
    over keys ``sum_i w_i alpha_i |V_i|`` by ``LAMBDA sqrt(sum_i (w_i alpha_i V_i)**2)``
    (each key's errors independent and mean-zero): it holds with high probability under
    that model, not always, so a ratio above 1 against it is reported, never fatal.
    Hazards of the integer add (zero, subnormal, underflow) are outside the model: the
    report counts them and does not hold such records to the bound.
    """
    variant = check_variant(variant)
    for arg, value in (("head_dim", head_dim), ("kv_len", kv_len), ("block_n", block_n)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"argument {arg!r} must be an integer >= 1, got {value!r}")
    c = check_c(c)
    tau = check_tau(tau)
    pol = _resolve_policy(policy, variant)
    u = get_format(pol.work).unit_roundoff
    u_cast = get_format(pol.p_cast).unit_roundoff if pol.p_cast else 0.0
    if not _contains(pol.pv.in_format, pol.p_cast or pol.work):  # P re-rounded for the matmul
        u_cast += get_format(pol.pv.in_format).unit_roundoff * (1.0 + u_cast)
    u_r = get_format(pol.r_cast).unit_roundoff if pol.r_cast else 0.0
    u_o = get_format(pol.o_lowp).unit_roundoff if (variant == "fa_bf16" and pol.o_lowp) else 0.0
    b = int(kv_len) if variant == "naive" else int(block_n)
    blocks = 1 if variant == "naive" else -(-int(kv_len) // int(block_n))
    qk_u = get_format(pol.qk.out_format).unit_roundoff
    pv_u = get_format(pol.pv.out_format).unit_roundoff
    qk_gamma = _accumulation_gamma(pol.qk.accumulation.model, int(head_dim), qk_u)
    pv_gamma = _accumulation_gamma(pol.pv.accumulation.model, b, pv_u)
    rowsum_gamma = _accumulation_gamma(pol.rowsum, b, u)
    exp_u, exp_slope = (u, 0.0) if pol.exp == "cr" else (8.0 * u, 2.0 * u)
    p_abs, p_sat, scale_u = _p_cast_terms(pol, variant, float(tau), u)
    if variant == "fa4" and pol.work == "fp32":
        # FA4's exp2: polynomial + FMA roundings (FA4_EX2_REL_ERR), the FMA's and the
        # constant c's roundings (2u |s - m|) and that of m c (u |m| <= u |s| + u |s - m|,
        # inside the score's 2u |s|); x < -126 gives a subnormal pattern: absolute 2**-125
        from amla_numerics.flash.fa4 import FA4_EX2_REL_ERR

        exp_u, exp_slope = FA4_EX2_REL_ERR, 2.0 * u
        p_abs += 2.0**-125
    u_cast += scale_u
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
        c=float(c),
        eps_bias=float(pol.eps_bias),
        tau=float(tau),
        clamp=pol.dn_clamp is not None and pol.rescale == "int_add",
        p_absolute=p_abs,
        p_saturate=p_sat,
    )
    terms = {
        "exp": exp_u,
        "fold": u if variant in AMLA_VARIANTS else 0.0,
        "cast": u_cast,
        "pv": pv_gamma,
        "rowsum": rowsum_gamma,
        "rescale_step": _rho_const(bound),
        "division": 2 * u if variant in AMLA_VARIANTS else u,
    }
    return dataclasses.replace(bound, terms=terms)


def _resolve_policy(policy: Any, variant: str):
    # the policy record and the variant's FP8 P cast, not the emulator
    from amla_numerics.flash.fp8 import variant_policy
    from amla_numerics.flash.policy import get_policy

    return variant_policy(get_policy(policy), variant)


def _p_cast_terms(pol: Any, variant: str, tau: float, u: float) -> tuple[float, bool, float]:
    """(p_absolute, p_saturate, extra relative error of the static scale) of the P cast."""
    s = float(np.float32(pol.p_scale)) if pol.work == "fp32" else float(pol.p_scale)
    scale_u = 0.0 if s == 1.0 else 2.0 * u
    if pol.p_cast is None:
        return 0.0, False, scale_u
    fmt = get_format(pol.p_cast)
    tiny = fmt.min_subnormal * (1.0 if pol.p_cast_rounding == "rz" else 0.5)
    amla = variant in AMLA_VARIANTS
    frame = math.sqrt(2.0) * (1.0 + 2.0**-7) if amla else 1.0
    top = 2.0**tau if variant in ("lazy", "fa4") else 1.0  # the largest P (lazy: stale max)
    biggest = s * top * frame * (1.0 + 4.0 * u)
    return tiny / s * frame, biggest > fmt.max_finite, scale_u


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
    return bool(np.array_equal(np.asarray(round_to(x64, get_format(fmt)), dtype=np.float64), x64))


def _kappa(c: float) -> float:
    return max(abs(1.0 - 1.0 / c), abs(0.5 - 1.0 / c))


def _rho_const(b: Bound) -> float:
    """The data-independent part of AMLA's per-step rescale mismatch (0 for the others)."""
    if b.variant not in AMLA_VARIANTS:
        return 0.0
    u = b.u_work
    if b.variant == "amla_nocomp":
        return (1.0 + b.u_r) / (1.0 - b.u_r) - 1.0
    if b.variant == "amla_exactcomp":
        return 3.0 * u
    eps = b.eps_max
    kappa = 1.0 if b.variant == "amla_fp32r" else _kappa(b.c)
    return eps * kappa + b.eps_bias / b.c + eps * eps + 2.0**-24 + u * eps


def softmax_weights(
    q: Any, k: Any, scale: float, mask: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 scores ``scale q k^T`` and softmax weights (an approximation, for the bounds).

    Returns
    -------
    scores, weights : numpy.ndarray
        Both of shape ``(..., M, N)``.
    """
    q64 = np.asarray(q).astype(np.float64)
    k64 = np.asarray(k).astype(np.float64)
    s = float(scale) * (q64 @ np.swapaxes(k64, -1, -2))
    if mask is not None:
        s = s + np.asarray(mask, dtype=np.float64)
    m = np.max(s, axis=-1, keepdims=True)
    w = np.exp(s - m)
    w /= np.sum(w, axis=-1, keepdims=True)
    return s, w


@dataclass(frozen=True)
class BoundInputs:
    """What the bounds need of one set of inputs, computed once (see :func:`bound_inputs`).

    All arrays are float64: scores ``s``, softmax weights ``w`` (``(..., M, N)``), the
    magnitudes ``qk_abs = scale |q| |k|^T``, ``|v|``, ``v**2``, ``|out| = |w v|`` and the
    column maxima of ``|v|``.
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


#: The matrix-unit input formats checked for exact representability of the inputs.
_IN_FORMATS = ("bf16", "fp16", "fp32", "fp64")


def bound_inputs(q: Any, k: Any, v: Any, scale: float) -> BoundInputs:
    """Precompute the input-dependent quantities of :func:`elementwise_bound` once.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> bi = bound_inputs(rng.standard_normal((2, 8)), rng.standard_normal((5, 8)),
    ...                   rng.standard_normal((5, 3)), 0.35)
    >>> bi.w.shape, sorted(bi.v_formats)
    ((2, 5), ['fp64'])
    """
    q64 = np.asarray(q).astype(np.float64)
    k64 = np.asarray(k).astype(np.float64)
    v64 = np.asarray(v).astype(np.float64)
    s, w = softmax_weights(q64, k64, scale)
    v_abs = np.abs(v64)
    fits = {name: _representable(q, name) and _representable(k, name) for name in _IN_FORMATS}
    return BoundInputs(
        head_dim=int(q64.shape[-1]),
        kv_len=int(k64.shape[-2]),
        s=s,
        w=w,
        qk_abs=float(scale) * (np.abs(q64) @ np.swapaxes(np.abs(k64), -1, -2)),
        v_abs=v_abs,
        v_sq=v64**2,
        out_abs=np.abs(w @ v64),
        v_max=np.max(v_abs, axis=-2, keepdims=True),
        qk_formats=frozenset(n for n, ok in fits.items() if ok),
        v_formats=frozenset(n for n in _IN_FORMATS if _representable(v, n)),
    )


def elementwise_bound(
    bound: Bound,
    q: Any,
    k: Any = None,
    v: Any = None,
    scale: float | None = None,
    *,
    kind: str = "deterministic",
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
    scale : float
        The softmax scale (with arrays).
    kind : {"deterministic", "probabilistic"}
        See the Notes of :func:`a_priori_bound`.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(..., M, dv)``.

    Notes
    -----
    The weights ``w_i`` are evaluated in float64 (relative error ~1e-13, far below every
    term); the bound is then inflated by ``1 + 2**-20`` to cover that evaluation.
    """
    if kind not in ("deterministic", "probabilistic"):
        raise ValueError(
            f"argument 'kind' must be 'deterministic' or 'probabilistic', got {kind!r}"
        )
    if not isinstance(bound, Bound):
        raise TypeError(f"argument 'bound' must be a Bound, got {type(bound).__name__}")
    if isinstance(q, BoundInputs):
        x = q
    elif k is None or v is None or scale is None:
        raise TypeError("pass q, k, v and scale, or a BoundInputs as q alone")
    else:
        x = bound_inputs(q, k, v, scale)
    if x.kv_len != bound.kv_len or x.head_dim != bound.head_dim:
        raise ValueError(
            f"inputs (d={x.head_dim}, N={x.kv_len}) do not match the bound "
            f"(d={bound.head_dim}, N={bound.kv_len})"
        )
    prob = kind == "probabilistic"

    def count(n: np.ndarray | float) -> np.ndarray | float:
        """n roundings of size u: n (deterministic) or LAMBDA sqrt(n) (probabilistic)."""
        return np.minimum(n, LAMBDA * np.sqrt(n)) if prob else n

    b, u = bound, bound.u_work
    s, w, qk_abs = x.s, x.w, x.qk_abs
    n_keys = s.shape[-1]
    m = np.max(s, axis=-1, keepdims=True)
    srange = m - np.min(s, axis=-1, keepdims=True)  # >= sum_j |dm_j| for every key
    abs_s = np.abs(s)
    block = np.arange(n_keys) // b.block_n if b.variant != "naive" else np.zeros(n_keys, int)
    later = (b.blocks - 1 - block).astype(np.float64)  # k_i: rescales after key i's block
    own_add = (block > 0).astype(np.float64)  # key i's tile is added to an existing O

    # common to numerator and denominator: score, subtraction, exp
    qk_term = b.qk_gamma * qk_abs if not prob else _prob_scale(b.qk_gamma, b.head_dim, u) * qk_abs
    score = qk_term + 2 * u * abs_s
    stale = b.tau * _LN2 if b.variant in ("lazy", "fa4") else 0.0
    common = score + (u + b.exp_slope) * (m - s + stale) + b.exp_u

    rowsum = b.rowsum_gamma if not prob else _prob_scale(b.rowsum_gamma, b.block_n, u)
    pv = b.pv_gamma if not prob else _prob_scale(b.pv_gamma, b.block_n, u)
    if b.qk_in not in x.qk_formats:
        common = common + 2.0 * get_format(b.qk_in).unit_roundoff * (1.0 + u) * qk_abs
    v_round = 0.0 if b.pv_in in x.v_formats else get_format(b.pv_in).unit_roundoff
    num = common + b.terms["fold"] + b.u_cast + pv + v_round
    den = common + rowsum
    if b.variant in AMLA_VARIANTS:
        absm = np.max(np.abs(s), axis=-1, keepdims=True)
        eta = u * (2.0 * absm + 4.0)
        rho = b.terms["rescale_step"] + 2.0 * eta
        if b.variant != "amla_exactcomp":
            # e_N: u (|dn| + |eps|) per step, sum over steps of |dn| <= range log2 e + steps
            rho_dn = u * (srange * _LOG2E + 1.0)
        else:
            rho_dn = 0.0
        num = num + count(later) * (rho + u) + rho_dn + count(own_add) * u
        den = den + count(later) * 3.0 * u + u * srange + count(own_add) * u
    elif b.variant != "naive":
        num = num + count(later) * (2.0 * u + b.u_o) + count(own_add) * u + b.u_o
        den = den + count(later) * 2.0 * u + count(own_add) * u
    alpha = _inflate(num)
    if b.p_saturate:
        alpha = 1.0 + 2.0 * alpha
    beta = _inflate(den)
    out_abs = x.out_abs
    bnum = (w * alpha) @ x.v_abs
    bden = out_abs * np.sum(w * beta, axis=-1, keepdims=True)
    if prob:  # independent mean-zero errors across keys add in quadrature
        bnum = np.minimum(bnum, LAMBDA * np.sqrt((w * alpha) ** 2 @ x.v_sq))
        bden = np.minimum(
            bden, LAMBDA * out_abs * np.sqrt(np.sum((w * beta) ** 2, axis=-1, keepdims=True))
        )
    beta_max = np.max(beta, axis=-1, keepdims=True)
    if b.p_absolute:
        w_max = np.max(w, axis=-1, keepdims=True)
        bnum = bnum + b.p_absolute * w_max * np.sum(x.v_abs, axis=-2, keepdims=True)
    total = (bnum + bden) / (1.0 - beta_max)
    total = total * (1.0 + b.terms["division"]) + b.terms["division"] * out_abs
    vmax = x.v_max
    if b.variant in AMLA_VARIANTS and b.clamp:
        jumps = np.floor(srange / _CLAMP_NATS)
        total = total + jumps * 1.5 * 2.0**-30 * n_keys * vmax
    total = total + 2.0 * n_keys * 2.0**-133 * vmax
    return total * (1.0 + 2.0**-20)


def _inflate(t: np.ndarray) -> np.ndarray:
    """``t / (1 - t)``: a product of ``1 + delta_k`` with ``sum |delta_k| = t`` is within it."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(t < 1.0, t / (1.0 - np.minimum(t, 0.999999)), np.inf)


def _prob_scale(gamma: float, n: int, u: float) -> float:
    """Probabilistic counterpart of a gamma_n-type constant: at most LAMBDA sqrt(n) u."""
    return min(gamma, LAMBDA * math.sqrt(max(n, 1)) * u) if gamma > u else gamma
