"""A priori error bound of a split-KV run: per-split bounds composed with the combine's error.

A split run (:func:`amla_numerics.flash.attention` with ``splits=``) computes, for each
split ``s`` of the keys, a normalised partial ``o^_s`` with statistics ``m^_s``, ``l^_s``,
and merges them (:mod:`amla_numerics.flash.splitkv`): the split combine stage. This module
bounds ``|out^ - out|`` per output element, composing

* the split's own elementwise bound ``E_s`` (:func:`~amla_numerics.analysis.bounds.
  elementwise_bound` of the variant's :func:`~amla_numerics.analysis.bounds.a_priori_bound`
  on the split's keys: each split *is* an unsplit run on them);
* the relative error ``rho_s`` of the split's weight ``lambda^_s = l^_s e**(m^_s)`` against
  ``lambda_s = sum_{k in s} e**(s_k)`` (the denominator chain of the unsplit analysis, whose
  rescale factors ``a_j`` no longer cancel: ``|rho_s| <= R_s`` below);
* the combine's own roundings (CANN: the exp of ``m_s - M``, the product by ``l_s``, the
  sequential sum, the division, the products and the sequential sum over splits;
  FlashMLA: the log2 lse, the warp sum, ``log2`` and ``exp2``, the FMA chain).

The derivation is ``docs/numerics.md`` section 11 ("Bound"); the splits whose weight may
fall below the normal range, ``docs/bounds.md`` section 9 ("Split-KV weights below the
normal range").

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> q, k = rng.standard_normal((2, 16)), rng.standard_normal((300, 16))
>>> v = rng.standard_normal((300, 4))
>>> e = split_bound("fa_fp32", q, k, v, 0.25, splits=4, block_n=32)
>>> e.shape, bool(np.all(e > 0))
((2, 4), True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.apriori import a_priori_bound
from amla_numerics.analysis.bounds.elementwise import elementwise_bound
from amla_numerics.analysis.bounds.inputs import BoundInputs, bound_inputs
from amla_numerics.analysis.bounds.scores import score_error
from amla_numerics.variants import DEFAULT_C, DEFAULT_TAU, check_variant, spec

__all__ = ["combine_terms", "split_bound"]

_LN2 = math.log(2.0)

_LOG2E = 1.0 / _LN2

_LANES = 32


def _inflate(t: np.ndarray) -> np.ndarray:
    """``t / (1 - t)`` (inf where ``t >= 1``): a product of ``1 + delta_k`` with
    ``sum |delta_k| = t`` differs from 1 by at most that."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(t < 1.0, t / (1.0 - np.minimum(t, 0.999999)), np.inf)


def _split_inputs(x: BoundInputs, v: np.ndarray, lo: int, hi: int) -> BoundInputs:
    """The bound inputs of the keys ``[lo, hi)`` sliced from the whole problem's (the
    representable formats of the whole hold for every part)."""
    s = x.s[..., lo:hi]
    m = np.max(s, axis=-1, keepdims=True)
    m0 = np.where(np.isfinite(m), m, 0.0)  # a row with every key of the split masked
    w = np.exp(s - m0)
    tot = np.sum(w, axis=-1, keepdims=True)
    live = tot > 0
    w = np.where(live, w / np.where(live, tot, 1.0), 0.0)
    v_s = np.asarray(v[..., lo:hi, :], dtype=np.float64)
    v_abs = x.v_abs[..., lo:hi, :]
    extra: dict[str, Any] = {}  # the optional statistics the whole problem carries
    if x.lse is not None:
        with np.errstate(divide="ignore"):
            extra["lse"] = np.where(live, m0 + np.log(np.where(live, tot, 1.0)), -np.inf)
    if x.v_sum is not None:
        extra["v_sum"] = np.sum(v_abs, axis=-2, keepdims=True)
    if x.qk_l1 is not None:
        extra["qk_l1"] = x.qk_l1[..., lo:hi]
    if x.bias_abs is not None:
        extra["bias_abs"] = x.bias_abs[..., lo:hi]
    return dataclasses.replace(
        x,
        kv_len=hi - lo,
        s=s,
        w=w,
        qk_abs=x.qk_abs[..., lo:hi],
        v_abs=v_abs,
        v_sq=x.v_sq[..., lo:hi, :],
        out_abs=np.abs(w @ v_s),
        v_max=np.max(v_abs, axis=-2, keepdims=True),
        **extra,
    )


def combine_terms(
    method: str,
    *,
    n_splits: int,
    u: float,
    exp_u: float,
    exp_slope: float,
    dm: np.ndarray,
    lse2: np.ndarray | None = None,
    log2_l: np.ndarray | None = None,
    m_abs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-order relative error of each split's combine weight: numerator and denominator.

    Parameters
    ----------
    method : {"cann", "flashmla"}
    n_splits : int
        ``S``.
    u, exp_u, exp_slope : float
        The work format's unit roundoff and the exp's error ``exp_u + exp_slope |x|``.
    dm : numpy.ndarray
        (S, ..., M): ``M - m_s >= 0`` (nats; the split max below the row max), with slack
        for the score error.
    lse2, log2_l, m_abs : numpy.ndarray
        FlashMLA only, (S, ..., M): ``lse_s`` in log2 units, ``|log2 l_s|`` and ``|m_s|``.

    Returns
    -------
    num, den : numpy.ndarray
        (S, ..., M) first-order sums (inflated and composed with the split's ``R_s``):
        ``a_s`` multiplies split ``s``'s partial in the numerator, ``b_s`` its weight in the
        normalising denominator.
    lse : numpy.ndarray
        (1, ..., M): the combine's own absolute error of the output lse in nats beyond the
        denominator's (CANN: 0, its lse is ``M + ln L`` from the denominator; FlashMLA:
        ``ln 2 (max_t d_t + u (|log2 sum| + |G|)) + sigma``).

    Notes
    -----
    CANN: ``t_s = fl(l_s exp(fl(m_s - M)))`` carries ``exp_u + (u + exp_slope)|m_s - M| + u``;
    the sequential sum ``L`` ``(S - 1) u`` per term; ``w_s = fl(t_s / L)`` ``u``; the product
    and the ``S - 1`` adds of the output ``S u``. So ``a = eps + (S + 1) u``,
    ``b = eps + (S - 1) u``.
    FlashMLA (no normalisation by the weights' sum: every arithmetic error is a numerator
    error, ``b = 0``): in log2 units ``lse_s`` carries ``d_s = u(|log2 l_s| + 2|m_s| log2 e +
    |lse_s|)``; ``G`` is within ``max_t d_t`` of its value from exact ``lse``, plus the
    warp sum's relative error ``sigma = ln2 u max|lse_t - M| + u + gamma_c``
    (``c = ceil(S/32) + 4`` adds) and its own ``u(|log2 sum| + |G|)``; ``w_s`` adds
    ``u |lse_s - G|`` and the exp2's ``u``; the FMA chain ``S u``.
    """
    from amla_numerics.flash.splitkv import check_combine  # the emulator stays a lazy import

    method = check_combine(method)
    if method == "cann":
        eps = exp_u + (u + exp_slope) * dm + u
        den = eps + (n_splits - 1) * u
        return eps + (n_splits + 1) * u, den, np.zeros_like(den[:1])
    assert lse2 is not None and log2_l is not None and m_abs is not None
    live = np.isfinite(lse2)
    lse_f = np.where(live, lse2, 0.0)
    d = u * (log2_l + 2.0 * m_abs * _LOG2E + np.abs(lse_f))
    d = np.where(live, d, 0.0)
    d_max = np.max(d, axis=0, keepdims=True)
    top = np.max(np.where(live, lse2, -np.inf), axis=0, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    x_max = np.max(np.where(live, top - lse_f, 0.0), axis=0, keepdims=True)
    c = -(-n_splits // _LANES) + 4
    sigma = _inflate(_LN2 * u * x_max + u + c * u)
    # the exact global lse (log2 units) and the warp sum it came from, with slack 1 (a row
    # with no live split: log2(0) = -inf, no warning; its bound is +inf)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        g = top + np.log2(np.sum(np.where(live, np.exp2(lse_f - top), 0.0), axis=0, keepdims=True))
    g_abs = np.abs(g) + 1.0
    log2_sum = np.abs(g - top) + 1.0
    xi = _LN2 * (d + d_max + u * (log2_sum + g_abs) + u * (np.abs(lse_f - g) + 1.0)) + sigma + u
    num = xi + n_splits * u
    lse_term = _LN2 * (d_max + u * (log2_sum + g_abs)) + sigma
    return num, np.zeros_like(num), lse_term


def _underflow_terms(
    b0: Any,
    combine: str,
    parts: list[dict[str, Any]],
    stack: dict[str, np.ndarray],
    out_abs: np.ndarray,
    score_max: np.ndarray,
) -> np.ndarray:
    """Absolute error (before the division by ``1 - max_s B_s``) of the split weights that
    may fall below the work format's normal range, where their relative bound fails.

    CANN: ``fl(exp(fl(m_s - M)))`` errs by at most ``sigma`` (half the format's smallest
    subnormal for a correctly rounded exp, the whole for the polynomial one) once
    ``exp(m_s - M) < 2**emin``: ``t_s = fl(l_s e)`` by ``l_s sigma`` plus its own rounding
    ``sigma``, ``w_s = fl(t_s / L)`` and ``fl(w_s o_s)`` by ``sigma`` each (``L >= r^_min``:
    the split holding the row max has ``exp(0) = 1`` and ``l >= 1``), so the output gains
    ``sigma ((l_s + 2)(|o_s| + E_s) + 1)`` and the sum ``L`` ``sigma (l_s + 1)``, i.e.
    ``|out| sigma (l_s + 1)``. FlashMLA: ``w_s = exp2(fl(lse_s - G))`` errs by ``sigma``
    once ``lse_s - G < emin`` and the FMA by ``sigma``: ``sigma (|o_s| + E_s + 1)``.
    ``|o_s| <= max_{k in s} |v_k|`` (a convex combination). A split is charged where an
    upper bound of ``M - m_s`` (``G - lse_s``), with the score error and one binade of
    slack, reaches ``-emin`` binades; elsewhere the term is 0."""
    from amla_numerics.formats import get_format

    work = get_format(b0.work)
    # half a spacing for a correctly rounded exp; the whole for the polynomial exp and for
    # FP64's (numpy's exp: faithful, and half of float64's spacing is not a float64)
    cr = b0.exp_model == "cr" and b0.work != "fp64"
    sig = work.min_subnormal * (0.5 if cr else 1.0)
    tiny = np.finfo(np.float64).tiny
    emin = -math.log2(work.min_normal)  # 126 for FP32
    extra = np.zeros_like(out_abs)
    if combine == "cann":
        # a stale m_s, in binades (Bound.tau is in log2 units for every stale-max variant)
        stale = b0.tau if spec(b0.variant).stale_max is not None else 0.0
        deep = stack["dm"] * _LOG2E + stale + 1.0 >= emin  # (S, ..., M)
    else:
        lse2 = stack["lse2"]
        live = np.isfinite(lse2)
        top = np.max(np.where(live, lse2, -np.inf), axis=0, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)  # a row with no live split
        gap = top - np.where(live, lse2, top) + math.log2(len(parts))
        deep = live & (gap + 2.0 * score_max[..., 0] * _LOG2E + 1.0 >= emin)
    if not deep.any():
        return extra
    for i, p in enumerate(parts):
        o_hi = p["v_max_s"] + p["e"]  # (..., 1, Dv) + (..., M, Dv)
        d = deep[i][..., None]
        # inf * 0 (an unbounded l or output beside a zero one) is an unbounded term: +inf
        with np.errstate(invalid="ignore", over="ignore"):
            if combine == "cann":
                lh = p["l_hi"][..., None]
                term = sig * ((lh + 2.0) * o_hi + 1.0 + (lh + 1.0) * out_abs) / b0.r_hat_min
            else:
                term = sig * (o_hi + 1.0)
            term = np.where(np.isnan(term), np.inf, term)
            # a term in float64's subnormal range (FP64 work) rounds by up to half a spacing:
            # one spacing up covers it
            term = np.where(term < tiny, np.nextafter(term, np.inf), term)
            extra = extra + np.where(d, term, 0.0)
    return extra


def split_bound(
    variant: str,
    q: Any,
    k: Any,
    v: Any,
    scale: float,
    *,
    splits: int | Sequence[tuple[int, int]],
    block_n: int = 512,
    c: float = DEFAULT_C,
    tau: float = DEFAULT_TAU,
    policy: Any = None,
    combine: str = "cann",
    mask: Any = None,
    causal: bool = False,
    return_lse: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Absolute error bound of every output element of a split-KV run (float64, out's shape).

    Parameters
    ----------
    variant : str
        One of :data:`amla_numerics.variants.VARIANTS`.
    q, k, v : array_like
        ``(..., M, d)``, ``(..., N, d)``, ``(..., N, dv)``.
    scale : float
        The softmax scale.
    splits : int or sequence of (lo, hi)
        The split plan, as :func:`amla_numerics.flash.attention` takes it.
    block_n, c, tau, policy :
        As :func:`~amla_numerics.analysis.bounds.a_priori_bound`.
    combine : {"cann", "flashmla"}
        The combine modelled.
    mask, causal
        The attention mask, as :func:`amla_numerics.flash.attention` reads it. A split
        with no attended key for a row has weight exactly 0 in both combines (and in the
        exact answer): it contributes nothing to that row's bound.
    return_lse : bool
        Also return the bound of the output lse's absolute error (nats, (..., M)).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, numpy.ndarray) with ``return_lse``
        ``+inf`` on rows with no attended key at all (their output is undefined).

    Notes
    -----
    With exact split weights ``W_s = lambda_s / sum_t lambda_t`` (``= sum_{k in s} w_k``),
    exact split outputs ``o_s`` and the computed output
    ``out^ = sum_s lambda_s (1 + a_s) o^_s / sum_t lambda_t (1 + b_t)``,

    ``|out^ - out| <= [sum_s W_s (1 + A_s) E_s + sum_s A_s sum_{k in s} w_k |v_k|
    + |out| sum_s W_s B_s] / (1 - max_s B_s)``

    with ``A_s = (1 + R_s)(1 + infl(a'_s)) - 1``, ``B_s = (1 + R_s)(1 + infl(b'_s)) - 1``
    (``a'``, ``b'`` from :func:`combine_terms`, ``infl(t) = t / (1 - t)``) and
    ``R_s = sum_{k in s} w_k infl(t_k) / W_s`` the bound of the relative error of
    ``lambda^_s = sum_k e**(s_k) (1 + beta_k)`` (a weighted mean of the per-key
    ``|beta_k| <= infl(t_k)``), with ``t_k`` over the split's keys ``k`` (block ``j_k`` of the
    split's ``J_s``): ``score_k + (u + exp_slope)(m_s - s_k + stale) + exp_u + rowsum
    + 3u (J_s - 1 - j_k) + u [j_k > 0] + u (range_s) + n_s 2**-149`` (the score and exp terms
    of :func:`~amla_numerics.analysis.bounds.a_priori_bound`; ``3u`` per later block for
    ``fl(a_j l)``, the add and ``a_j``'s exp; ``u |dm_j|`` summed for the rounded
    ``m_{j-1} - m_j``; subnormal probabilities). Then inflated by ``1 + 2**-20`` for the
    float64 evaluation of the weights. A split whose weight may fall below the work
    format's normal range adds the absolute term of ``_underflow_terms`` (its relative
    bound does not hold there; docs/bounds.md section 9).
    """
    from amla_numerics.flash.splitkv import check_combine, split_ranges

    variant = check_variant(variant)
    combine = check_combine(combine)
    q64 = np.asarray(q)
    k64, v64 = np.asarray(k), np.asarray(v)
    n = int(k64.shape[-2])
    ranges = split_ranges(n, splits, int(block_n))
    x = bound_inputs(q64, k64, v64, scale, mask=mask, causal=causal)
    live = [(lo, hi) for lo, hi in ranges if hi > lo]
    n_live = len(ranges)
    kw: dict[str, Any] = {"block_n": block_n, "c": c, "tau": tau, "policy": policy}
    b0 = a_priori_bound(variant, head_dim=x.head_dim, kv_len=n, **kw)
    fin_all = np.isfinite(x.s)  # attended keys
    attended = np.any(fin_all, axis=-1)  # (..., M): rows with an output
    sp = spec(variant)
    score_all, _ = score_error(b0, x)  # 0 at masked keys
    whole = _Whole(
        x=x,
        v=v64,
        fin=fin_all,
        row_max=np.max(np.where(fin_all, x.s, -np.inf), axis=-1, keepdims=True),
        score=score_all,
        score_max=np.max(score_all, axis=-1, keepdims=True),
        # the stale running max of the standard softmax (lazy, skip_scale), in nats
        stale=b0.tau * _LN2 if sp.stale_max is not None and sp.softmax == "standard" else 0.0,
        u=b0.u_work,
    )
    parts = [_split_part(variant, whole, lo, hi, kw) for lo, hi in live]
    total, b_max, stack, lse1 = _combined(b0, combine, parts, whole, n_live)
    total = np.where(attended[..., None] & ~np.isnan(total), total * (1.0 + 2.0**-20), np.inf)
    if not return_lse:
        return total
    return total, np.where(attended, _lse_bound(combine, stack, b_max, lse1, n_live), np.inf)


@dataclass(frozen=True)
class _Whole:
    """What every split reads of the whole problem: its bound inputs ``x`` and values
    ``v``, the attended keys ``fin``, the row max ``row_max`` (..., M, 1), the per-key
    score error ``score`` (0 at masked keys) and its row max ``score_max``, the stale
    running max ``stale`` (nats) and the work format's ``u``."""

    x: BoundInputs
    v: np.ndarray
    fin: np.ndarray
    row_max: np.ndarray
    score: np.ndarray
    score_max: np.ndarray
    stale: float
    u: float


def _split_part(
    variant: str, whole: _Whole, lo: int, hi: int, kw: dict[str, Any]
) -> dict[str, Any]:
    """The split ``[lo, hi)``'s own bound ``E_s``, the bound ``R_s`` of its weight's
    relative error, and the statistics the combine's terms read (see :func:`split_bound`)."""
    x, u, stale = whole.x, whole.u, whole.stale
    s_all, w_all, fin_all = x.s, x.w, whole.fin
    score_all, score_max, row_max = whole.score, whole.score_max, whole.row_max
    block_n = kw["block_n"]
    sp = spec(variant)
    ns = hi - lo
    bs = a_priori_bound(variant, head_dim=x.head_dim, kv_len=ns, **kw)
    s = s_all[..., lo:hi]
    fin = fin_all[..., lo:hi]
    dead = ~np.any(fin, axis=-1)  # (..., M): no attended key: weight exactly 0
    e_s = elementwise_bound(bs, _split_inputs(x, whole.v, lo, hi))  # +inf on dead rows
    e_s = np.where(dead[..., None], 0.0, e_s)
    m_s = np.max(np.where(fin, s, -np.inf), axis=-1, keepdims=True)
    m_s0 = np.where(dead[..., None], 0.0, m_s)
    s0 = np.where(fin, s, m_s0)  # masked keys: at the split's max (their terms are 0)
    srange = m_s0 - np.min(s0, axis=-1, keepdims=True)
    block = np.arange(ns) // block_n if sp.tiled else np.zeros(ns, int)
    later = (bs.blocks - 1 - block).astype(np.float64)
    own_add = (block > 0).astype(np.float64)
    t_k = (
        score_all[..., lo:hi]
        + (u + bs.exp_slope) * (m_s0 - s0 + stale)
        + bs.exp_u
        + bs.rowsum_gamma
        + 3.0 * u * later
        + u * own_add
    )
    t_k = np.where(fin, t_k + u * srange + ns * 2.0**-149, 0.0)
    ws = np.sum(w_all[..., lo:hi], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # the weighted mean over keys
        r_s = np.sum(w_all[..., lo:hi] * _inflate(t_k), axis=-1) / ws
    r_s = np.where(ws > 0, r_s, np.max(_inflate(t_k), axis=-1))
    with np.errstate(divide="ignore"):
        lam = np.log(np.sum(np.where(fin, np.exp(s0 - m_s0), 0.0), axis=-1))  # ln l_s
    # the split's computed l (AMLA: without r^) from above: its exact sum in the frame
    # of its exact max, the computed max off by <= the score error, a stale max by tau
    stale_l = 2.0 ** (bs.tau + 1.0) if sp.stale_max is not None else 1.0
    with np.errstate(over="ignore"):
        l_hi = np.exp(lam + 2.0 * score_max[..., 0]) * (1.0 + r_s) * stale_l
    return {
        "e": e_s,
        "l_hi": np.where(dead, 0.0, l_hi),
        "v_max_s": np.max(x.v_abs[..., lo:hi, :], axis=-2, keepdims=True),
        "r": r_s,
        "W": ws,
        "wv": w_all[..., lo:hi] @ x.v_abs[..., lo:hi, :],
        "dm": np.where(dead, 0.0, row_max[..., 0] - m_s0[..., 0] + score_max[..., 0]),
        "lse2": np.where(dead, -np.inf, (m_s0[..., 0] + lam) * _LOG2E),
        "log2_l": np.where(dead, 0.0, lam * _LOG2E),
        "m_abs": np.abs(m_s0[..., 0]),
    }


def _combined(
    b0: Any, combine: str, parts: list[dict[str, Any]], whole: _Whole, n_live: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The combine of the splits' bounds: ``(total, b_max, stack, lse1)``, the bound per
    output element before the float64 slack (NaN: none), ``max_s B_s`` (..., M, 1), the
    splits' stacked statistics and the combine's own lse term."""
    x, u, score_max = whole.x, whole.u, whole.score_max
    stack = {key: np.stack([p[key] for p in parts]) for key in ("r", "W", "dm", "lse2")}
    num1, den1, lse1 = combine_terms(
        combine,
        n_splits=n_live,
        u=u,
        exp_u=b0.exp_u,
        exp_slope=b0.exp_slope,
        dm=stack["dm"],
        lse2=stack["lse2"],
        log2_l=np.stack([p["log2_l"] for p in parts]) + 1.0,
        m_abs=np.stack([p["m_abs"] for p in parts]) + 1.0,
    )
    a = (1.0 + stack["r"]) * (1.0 + _inflate(num1)) - 1.0
    b = (1.0 + stack["r"]) * (1.0 + _inflate(den1)) - 1.0
    total_num = np.zeros_like(x.out_abs)
    # 0 * inf below (a weight that underflowed, its relative error unbounded: scores spread
    # over ~1e7 nats, such as finite biases used as masks) is NaN: no bound, so +inf
    with np.errstate(invalid="ignore"):
        for i, p in enumerate(parts):
            wa = (p["W"] * (1.0 + a[i]))[..., None]
            total_num = total_num + wa * p["e"] + a[i][..., None] * p["wv"]
        den = x.out_abs * np.sum(stack["W"] * b, axis=0)[..., None]
    b_max = np.max(b, axis=0)[..., None]
    total_num = total_num + _underflow_terms(b0, combine, parts, stack, x.out_abs, score_max)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = np.where(b_max < 1.0, (total_num + den) / (1.0 - b_max), np.inf)
    return total, b_max, stack, lse1


def _lse_bound(
    combine: str, stack: dict[str, np.ndarray], b_max: np.ndarray, lse1: np.ndarray, n_live: int
) -> np.ndarray:
    """The bound of the output lse's absolute error (nats, (..., M)), every row."""
    r_max = np.max(stack["r"], axis=0)
    b_lse = b_max[..., 0] if combine == "cann" else r_max
    with np.errstate(divide="ignore", invalid="ignore"):
        lse_b = np.where(b_lse < 1.0, -np.log1p(-np.minimum(b_lse, 0.999999)), np.inf)
    lse_abs = np.abs(np.max(stack["lse2"], axis=0)) * _LN2 + math.log(n_live) + 1.0
    return (lse_b + lse1[0] + 2.0**-52 * lse_abs) * (1.0 + 2.0**-20)
