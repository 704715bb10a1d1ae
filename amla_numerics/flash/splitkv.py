"""Split-KV (flash-decoding): per-split partials and the combine step, as the kernels do it.

A long-context decode kernel splits the keys of a row into ``S`` ranges, runs FlashAttention
on each range on its own core, stores each split's partial output and softmax statistics
in FP32 workspace, and a combine step merges them. :func:`run_splits` runs every split as
an unsplit emulation over its keys (its blocks restart at the split's first key, so AMLA's
``n``, ``r^``, ``cof`` and the plain block-0 store restart per split, and each split's
final division ``O / (l r^)`` undoes its own ``2**n`` scale and folded ``r^``), then merges
the normalised partials ``o_s`` with the split statistics ``m_s`` (row max) and ``l_s``
(row sum), all in the policy's work format ``W`` (``fl`` = one rne rounding in ``W``).

``"cann"`` (``FiaBlockVecFlashDecode::ComputeScaleValue`` and ``ReduceFinalRes``, CANN
``attention/common/op_kernel/arch32/fia_block_vec_flashdecode.h``; the split core stores
``l_s`` and ``m_s`` in ``ComputeLogSumExpAndCopyToGm`` and the normalised FP32 partial in
``Bmm2FDDataCopyOut``, ``fia_block_vec_nonquant_mla.h``)::

    M   = max(-FLT_MAX, max_s m_s)                       (exact)
    t_s = fl(l_s * exp(fl(m_s - M)))                     (the policy's exp)
    L   = fl(...fl(fl(0 + t_0) + t_1)... + t_{S-1})      (splits in order)
    w_s = fl(t_s / L)
    out = fl(...fl(fl(w_0 o_0) + fl(w_1 o_1))... + fl(w_{S-1} o_{S-1}))

``"flashmla"`` (FlashMLA ``csrc/smxx/decode/combine/combine.cu``,
``flash_fwd_mla_combine_kernel``; the split kernel ``csrc/sm90/decode/dense/splitkv_mla.cuh``
stores ``O / L`` in FP32 and ``lse_s = log2(L) + max`` in log2 units)::

    lse_s = fl(log2(l_s) + fl(m_s * LOG2E))              (-inf where l_s = 0)
    M     = max_s lse_s, or 0 when every lse_s is -inf
    sum   = the warp sum of exp2(fl(lse_s - M)): lane L adds splits L, L+32, ... in order
            from 0, then the xor butterfly (offsets 16, 8, 4, 2, 1)
    G     = +inf if sum == 0, else fl(fl(log2(sum)) + M)
    w_s   = exp2(fl(lse_s - G))
    out   = fma(w_{S-1}, o_{S-1}, ... fma(w_0, o_0, 0))   (one rounding per split)

Our choices (*[choice]*): ``exp2``/``log2`` are correctly rounded in ``W`` (the kernel's
``--use_fast_math`` maps them to the approximate ``ex2``/``lg2`` instructions, whose bits
we do not model); FlashMLA's max lives in log2 units already (its scores are scaled by
``scale * log2 e``), ours is converted with one rounding; the final BF16 output cast of
both kernels is not applied (the emulator's ``out`` stays in ``W``, as unsplit).
Under a float64 work format (``"exact"`` preset) FlashMLA's FMA is a plain multiply-add.

Guard for splits without a live key (empty range, or every key masked for the row: the
split's ``m_s = -inf``, ``l_s = 0``): the partial is taken as 0 and the weight is exactly 0
(CANN: ``exp(-inf) = 0`` and ``l_s = 0``; FlashMLA: ``lse_s = -inf``, its ``O / 1 = 0``),
so such a split changes nothing. A row with no live split: CANN gives ``0 / 0`` = NaN and
``lse = -inf`` (as the unsplit run); FlashMLA gives 0 and ``lse = +inf`` (its kernel's
convention).

Examples
--------
>>> import numpy as np
>>> split_ranges(10, 3, 2)
[(0, 2), (2, 6), (6, 10)]
>>> o = np.float32([[[1.0]], [[3.0]]])          # two splits, one row, one column
>>> m, l = np.float32([[0.0], [0.0]]), np.float32([[1.0], [3.0]])
>>> out, lse, w = combine_partials(o, m, l, "cann", exp=np.exp)
>>> float(out[0, 0]), w[:, 0].tolist()
(2.5, [0.25, 0.75])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np

from amla_numerics.exp2add import HAZARDS
from amla_numerics.flash._exactsum import _LONG
from amla_numerics.flash.stages import constants
from amla_numerics.flash.trace import Trace
from amla_numerics.formats import FP32
from amla_numerics.rounding import round_to

__all__ = [
    "COMBINES",
    "SPLIT_HAZARDS",
    "SplitTrace",
    "check_combine",
    "combine_partials",
    "exp2_cr",
    "log2_cr",
    "run_splits",
    "split_ranges",
]

#: The combine kernels modelled: name -> where it lives.
COMBINES: dict[str, str] = {
    "cann": "CANN FiaBlockVecFlashDecode (max/sum per split, exp, divide, multiply-add)",
    "flashmla": "FlashMLA flash_fwd_mla_combine_kernel (log2 lse per split, exp2, FMA)",
}

#: Hazard classes a split run adds to ``FlashResult.hazards`` (elements of ``out``, per
#: split): a split with no keys, a split whose row max is -inf (every key masked), and a
#: live split's non-finite partial (AMLA integer-add garbage the combine spreads).
SPLIT_HAZARDS: tuple[str, ...] = ("split_empty", "split_masked", "split_nonfinite")

_LANES = 32
_MAX_SPLITS = (32, 64, 96, 128, 160)  # FlashMLA's MLA_NUM_SPLITS_SWITCH cases
_WINDOW = 2.0**-49  # float64 exp2/log2 are within a few ulps: 16 ulps of slack
_MP_BITS = 160


@dataclass(frozen=True)
class SplitTrace:
    """Per-split partials of a split-KV run (``S`` leading).

    Attributes
    ----------
    ranges : tuple of (lo, hi)
        The key range of each split.
    combine : str
        The combine kernel modelled.
    out : numpy.ndarray
        (S, ..., M, Dv) in ``W``: each split's normalised partial as its kernel stores it
        (``fl(O / l)``, AMLA ``fl(O / fl(l r^))``; garbage and NaN included).
    m, l : numpy.ndarray
        (S, ..., M) in ``W``: the split's row max and row sum (``-inf`` and 0 when dead).
    n, r_hat : numpy.ndarray
        (S, ..., M): AMLA's last ``n`` and ``r^`` of each split, undone by its own final
        division (0 and 1 for the other variants and for empty splits).
    weight : numpy.ndarray
        (S, ..., M) in ``W``: the combine's weight ``w_s``.
    dead : numpy.ndarray
        (S, ..., M) bool: the split has no unmasked key for the row (weight 0).
    hazards : tuple of dict
        Each split's AMLA integer-add hazard counts.
    traces : tuple of (Trace or None)
        Each split's per-block :class:`~amla_numerics.flash.trace.Trace` when
        ``trace=True`` (None for empty splits).
    """

    ranges: tuple[tuple[int, int], ...]
    combine: str
    out: np.ndarray
    m: np.ndarray
    l: np.ndarray
    n: np.ndarray
    r_hat: np.ndarray
    weight: np.ndarray
    dead: np.ndarray
    hazards: tuple[dict[str, int], ...]
    traces: tuple[Trace | None, ...]


def check_combine(name: object) -> str:
    """``name`` if it is one of :data:`COMBINES`, else a ValueError listing them.

    Examples
    --------
    >>> check_combine("cann")
    'cann'
    """
    if not isinstance(name, str) or name not in COMBINES:
        raise ValueError(
            f"unknown combine {name!r} for argument 'combine'; valid: {', '.join(COMBINES)}"
        )
    return name


def split_ranges(
    n: int, splits: int | Sequence[tuple[int, int]] | None, block_n: int
) -> list[tuple[int, int]]:
    """The key ranges of a split plan.

    Parameters
    ----------
    n : int
        Number of keys.
    splits : int, sequence of (lo, hi) or None
        None: one range. An int ``S >= 1``: the ``J = ceil(n / block_n)`` KV blocks dealt
        out in order, split ``s`` taking blocks ``[floor(s J / S), floor((s + 1) J / S))``
        (whole blocks, as both kernels split; empty when ``S > J``). A sequence: explicit
        ranges that partition ``[0, n)`` in order (``lo_0 = 0``, ``hi_s = lo_{s+1}``,
        ``hi_last = n``; empty ranges allowed).
    block_n : int
        The KV block length.

    Returns
    -------
    list of (int, int)

    Raises
    ------
    ValueError, TypeError
        A plan that is not a partition of the keys, or ``S < 1``.

    Examples
    --------
    >>> split_ranges(5, 4, 2)
    [(0, 0), (0, 2), (2, 4), (4, 5)]
    >>> split_ranges(5, [(0, 3), (3, 5)], 2)
    [(0, 3), (3, 5)]
    """
    if splits is None:
        return [(0, n)]
    if isinstance(splits, bool):
        raise TypeError("argument 'splits' must be an int or a sequence of (lo, hi) ranges")
    if isinstance(splits, int | np.integer):
        s_count = int(splits)
        if s_count < 1:
            raise ValueError(f"argument 'splits' must be >= 1, got {s_count}")
        blocks = -(-n // block_n)
        edges = [min(n, (i * blocks // s_count) * block_n) for i in range(s_count + 1)]
        return [(edges[i], edges[i + 1]) for i in range(s_count)]
    try:
        ranges = [(r[0], r[1]) for r in splits]
        if any(len(r) != 2 for r in splits):
            raise TypeError
    except (TypeError, IndexError, KeyError):
        raise TypeError(
            "argument 'splits' must be an int or a sequence of (lo, hi) ranges"
        ) from None
    if not ranges:
        raise ValueError("argument 'splits' must hold at least one range")
    out: list[tuple[int, int]] = []
    expect = 0
    for lo, hi in ranges:
        if any(isinstance(x, bool) or not isinstance(x, int | np.integer) for x in (lo, hi)):
            raise TypeError(f"argument 'splits': range bounds must be integers, got {(lo, hi)}")
        if int(lo) != expect or int(hi) < int(lo):
            raise ValueError(
                f"argument 'splits' must partition [0, {n}) in order; range {(lo, hi)} "
                f"does not start at {expect} or ends before it starts"
            )
        out.append((int(lo), int(hi)))
        expect = int(hi)
    if expect != n:
        raise ValueError(f"argument 'splits' must partition [0, {n}); the ranges end at {expect}")
    return out


# ----------------------------------------------------------------------------------------
# correctly rounded exp2 / log2 in the work format


def _cr(x: np.ndarray, f64: Callable, fmp: Callable) -> np.ndarray:
    """``f(x)`` correctly rounded to float32 (``x`` float32): float64 ``f`` plus a window
    test, mpmath at 160 bits where the window straddles a float32 rounding boundary."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        with np.errstate(all="ignore"):
            return f64(x)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        y = f64(x64)
        r = y.astype(np.float32)
        lo = (y - np.abs(y) * _WINDOW).astype(np.float32)
        hi = (y + np.abs(y) * _WINDOW).astype(np.float32)
    hard = (lo != hi) & np.isfinite(y)
    if np.any(hard):
        idx = np.nonzero(hard)
        with mpmath.workprec(_MP_BITS):
            r[idx] = [round_to(fmp(mpmath.mpf(float(v))), FP32)[()] for v in x64[idx]]
    return r


def exp2_cr(x: np.ndarray) -> np.ndarray:
    """``2**x`` correctly rounded (nearest even) to ``x``'s dtype (float32; float64: numpy).

    Examples
    --------
    >>> exp2_cr(np.float32([0.5, -1.0, -np.inf])).tolist()
    [1.4142135381698608, 0.5, 0.0]
    """
    return _cr(x, np.exp2, lambda v: mpmath.power(2, v))


def log2_cr(x: np.ndarray) -> np.ndarray:
    """``log2(x)`` correctly rounded to ``x``'s dtype (``x >= 0``; 0 -> -inf).

    Examples
    --------
    >>> log2_cr(np.float32([8.0, 3.0, 0.0])).tolist()
    [3.0, 1.5849624872207642, -inf]
    """
    return _cr(x, np.log2, lambda v: mpmath.log(v, 2))


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``fl32(a b + c)`` with one rounding (float32): the product is exact in float64,
    TwoSum gives the exact sum ``s + e``, round to odd in float64 (53 >= 24 + 2 bits),
    then one rne cast to float32."""
    with np.errstate(all="ignore"):
        p = a.astype(np.float64) * b.astype(np.float64)
        c64 = c.astype(np.float64)
        s = p + c64
        bp = s - c64
        e = (p - bp) + (c64 - (s - bp))
        odd = (s.view(np.uint64) & np.uint64(1)).astype(bool)
        fix = (e != 0) & ~odd & np.isfinite(s)
        s = np.where(fix, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)


# ----------------------------------------------------------------------------------------
# the combine


def combine_partials(
    out: np.ndarray,
    m: np.ndarray,
    l: np.ndarray,
    method: str = "cann",
    *,
    exp: Callable[[np.ndarray], np.ndarray],
    log2e: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge normalised split partials as the ``method`` kernel does (module docstring).

    Parameters
    ----------
    out : numpy.ndarray
        (S, ..., M, Dv) partials in the work dtype ``W`` (float32 or float64).
    m, l : numpy.ndarray
        (S, ..., M) split row max and row sum in ``W``; a split with ``m = -inf`` (or
        ``l = 0``) is dead: partial 0, weight 0.
    method : {"cann", "flashmla"}
    exp : callable
        The work format's exp (the policy's; CANN's vector ``Exp``).
    log2e : W scalar, optional
        ``fl(1 / ln 2)`` (FlashMLA; default: the work format's rounding of it).

    Returns
    -------
    out, lse, weight
        (..., M, Dv) in ``W``; (..., M) float64 log-sum-exp of the scaled scores from the
        combine's ``W`` values (CANN ``M + ln L``; FlashMLA ``G ln 2``); (S, ..., M) weights.
    """
    method = check_combine(method)
    dt = out.dtype.type
    dead = np.isneginf(m) | (l == 0) | np.isnan(l)
    with np.errstate(invalid="ignore"):
        part = np.where(dead[..., None], dt(0), out)
    n_splits = out.shape[0]
    with np.errstate(all="ignore"):
        if method == "cann":
            big = dt(np.finfo(dt).max)
            mx = np.maximum(np.max(np.where(dead, dt(-np.inf), m), axis=0), -big)
            x = np.where(dead, dt(-np.inf), m - mx)
            t = l * exp(x)
            t = np.where(dead, dt(0), t)
            tot = np.zeros_like(mx)
            for s in range(n_splits):
                tot = tot + t[s]
            w = t / tot
            acc = w[0][..., None] * part[0]
            for s in range(1, n_splits):
                acc = acc + w[s][..., None] * part[s]
            lse = mx.astype(np.float64) + np.log(tot.astype(np.float64))
            return acc, lse, w
        log2e = dt(1.0 / math.log(2.0)) if log2e is None else dt(log2e)
        lse_s = np.where(dead, dt(-np.inf), log2_cr(np.where(dead, dt(1), l)) + m * log2e)
        mx = np.max(lse_s, axis=0)
        mx = np.where(np.isneginf(mx), dt(0), mx)
        e = exp2_cr(lse_s - mx)
        tot = _warp_sum(e)
        glob = np.where((tot == 0) | np.isnan(tot), dt(np.inf), log2_cr(tot) + mx)
        w = exp2_cr(lse_s - glob)
        acc = np.zeros(part.shape[1:], dt)
        for s in range(n_splits):
            if dt is np.float32:
                acc = _fma32(np.broadcast_to(w[s][..., None], acc.shape), part[s], acc)
            else:
                acc = w[s][..., None] * part[s] + acc
        lse = glob.astype(np.float64) * math.log(2.0)
        return acc, lse, w


def _warp_sum(e: np.ndarray) -> np.ndarray:
    """FlashMLA's sum over splits: per lane in split order from 0, then the xor butterfly."""
    n_splits = e.shape[0]
    cap = next((c for c in _MAX_SPLITS if n_splits <= c), None)
    if cap is None:
        raise ValueError(f"FlashMLA's combine takes at most 160 splits, got {n_splits}")
    per_lane = -(-cap // _LANES)
    pad = np.zeros((per_lane * _LANES, *e.shape[1:]), e.dtype)
    pad[:n_splits] = e
    lanes = pad.reshape(per_lane, _LANES, *e.shape[1:])
    acc = np.zeros(lanes.shape[1:], e.dtype)
    for i in range(per_lane):
        acc = acc + lanes[i]
    width = _LANES
    while width > 1:  # lane j < width/2 gets acc[j] + acc[j + width/2] (xor partner)
        width //= 2
        acc = acc[:width] + acc[width : 2 * width]
    return acc[0]


# ----------------------------------------------------------------------------------------
# the split driver


@dataclass
class _Partials:
    """Every split's partial result in split order (shapes broadcast to the full rows)."""

    out: list[np.ndarray] = field(default_factory=list)
    m: list[np.ndarray] = field(default_factory=list)
    l: list[np.ndarray] = field(default_factory=list)
    n: list[np.ndarray] = field(default_factory=list)
    r_hat: list[np.ndarray] = field(default_factory=list)
    hazards: list[dict[str, int]] = field(default_factory=list)
    traces: list[Trace | None] = field(default_factory=list)
    garbage: list[np.ndarray] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # any split touched


def run_splits(
    run: Any,
    ranges: list[tuple[int, int]],
    plan: list[list[tuple[int, int]]],
    combine: str,
) -> tuple[np.ndarray, np.ndarray, dict[str, int], dict[str, np.ndarray], np.ndarray, SplitTrace]:
    """Run every split with the emulator state ``run`` and merge them.

    ``plan[s]`` are split ``s``'s KV blocks (absolute key indices; empty for an empty
    split). Returns ``out``, ``lse``, the hazard counts (every class the unsplit run
    counts, summed over the splits, plus :data:`SPLIT_HAZARDS`), the per-class element
    masks shaped like ``out`` (a class touched the element in any split; the split classes
    as counted), the uncovered (garbage) elements of ``out`` (a live split's garbage
    element: the combine carries it to the same output element) and the
    :class:`SplitTrace`.
    """
    every = [b for blocks in plan for b in blocks]
    run.prepare(every)
    if run.v_small is not None:  # a long single-block P V (naive) takes no column statistics
        for lo, hi in every:
            if hi - lo > _LONG:
                run.v_small.pop(lo, None)
    parts = _Partials()
    for blocks in plan:
        _run_split(run, blocks, parts)
    out_s, m_s, l_s = np.stack(parts.out), np.stack(parts.m), np.stack(parts.l)
    log2e = constants(run.pol)["LOG2E"]
    out, lse, w = combine_partials(out_s, m_s, l_s, combine, exp=run.exp, log2e=log2e)
    dead = np.isneginf(m_s) | (l_s == 0)
    hazards = _split_hazards(parts, ranges, out_s, dead)
    uncovered = np.any(np.stack(parts.garbage) & ~dead[..., None], axis=0)
    trace = SplitTrace(
        ranges=tuple(ranges),
        combine=combine,
        out=out_s,
        m=m_s,
        l=l_s,
        n=np.stack(parts.n),
        r_hat=np.stack(parts.r_hat),
        weight=w,
        dead=dead,
        hazards=tuple(parts.hazards),
        traces=tuple(parts.traces),
    )
    return out, lse, hazards, parts.masks, uncovered, trace


def _run_split(run: Any, blocks: list[tuple[int, int]], parts: _Partials) -> None:
    """Run one split (an unsplit run on its blocks) and append its partial to ``parts``;
    an empty split is dead: O = 0, ``m = -inf``, ``l = 0``."""
    dt, inp = run.dt, run.inp
    row_shape = (*inp.batch, inp.m)
    out_shape = (*row_shape, inp.dv)
    if not blocks:
        parts.out.append(np.zeros(out_shape, dt))
        parts.m.append(np.full(row_shape, -np.inf, dt))
        parts.l.append(np.zeros(row_shape, dt))
        parts.n.append(np.zeros(row_shape))
        parts.r_hat.append(np.ones(row_shape))
        parts.hazards.append({})
        parts.garbage.append(np.zeros(out_shape, bool))
        parts.traces.append(None)
        return
    o, _, counts, full, uncovered, tr = run.execute(blocks, prepared=True)
    for name, touched in full.items():
        masks = parts.masks
        masks[name] = masks[name] | touched if name in masks else np.array(touched, bool)
    parts.garbage.append(np.broadcast_to(uncovered, out_shape))
    parts.out.append(np.broadcast_to(o, out_shape))
    parts.m.append(np.broadcast_to(run.final_m, row_shape).astype(dt))
    parts.l.append(np.broadcast_to(run.final_l, row_shape).astype(dt))
    sc = run.final_sc
    parts.n.append(np.zeros(row_shape) if sc is None else np.broadcast_to(sc.n, row_shape) + 0.0)
    parts.r_hat.append(
        np.ones(row_shape) if sc is None else np.broadcast_to(sc.r_hat, row_shape) + 0.0
    )
    parts.hazards.append(counts)
    parts.traces.append(tr)


def _split_hazards(
    parts: _Partials, ranges: list[tuple[int, int]], out_s: np.ndarray, dead: np.ndarray
) -> dict[str, int]:
    """The splits' hazard counts summed, plus :data:`SPLIT_HAZARDS`: empty splits (every
    output element), splits dead for a row (the row's elements), non-finite partials of
    live splits; their masks go into ``parts.masks``, with an empty mask per class no
    split touched."""
    out_shape = out_s.shape[1:]
    keys = list(dict.fromkeys(k for h in parts.hazards for k in h)) or list(HAZARDS)
    hazards = {key: sum(h.get(key, 0) for h in parts.hazards) for key in keys}
    empty = np.array([hi == lo for lo, hi in ranges])
    masked = dead & ~empty.reshape(-1, *[1] * (dead.ndim - 1))
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(out_s) & ~dead[..., None]
    split_masks = {
        "split_empty": np.broadcast_to(empty.any(), out_shape),
        "split_masked": np.broadcast_to(masked.any(axis=0)[..., None], out_shape),
        "split_nonfinite": bad.any(axis=0),
    }
    hazards["split_empty"] = int(empty.sum()) * int(np.prod(out_shape))
    hazards["split_masked"] = int(masked.sum()) * out_shape[-1]
    hazards["split_nonfinite"] = int(bad.sum())
    masks = parts.masks
    for name, touched in split_masks.items():
        masks[name] = np.array(touched, bool)
    for name in hazards:
        if name != "ok" and name not in masks:
            masks[name] = np.zeros(out_shape, bool)
    return hazards
