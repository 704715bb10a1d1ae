"""The likely cause of a failed verdict: which plausible bug explains the output best.

:func:`diagnose` refits the output against float64 attention of altered problems, each the
signature of a common kernel bug, and names the one that explains the output far better than
the exact answer does (its RMS error at most :data:`EXPLAINS` of the exact answer's):

- **wrong scale**: the softmax scale that fits best (a golden-section search over
  ``[scale/4, 4 scale]`` on a log scale), reported with its ratio to the declared scale;
- **masked keys leaking / missing**: the mask widened or narrowed by one key at every edge;
- **dropped block**: the last partial KV block of 64, 128, 256 or 512 keys left out;
- **doubled block**: the first or the last (partial) block of those sizes counted twice, in O
  and in the row sum;
- **missed rescale**: O accumulated over blocks of those sizes without its
  ``exp(m_old - m_new)`` rescale (each block's ``P V`` taken at the running max of its time)
  while the row sum is right;
- **lse inconsistent with out**: ``out`` passes while the lse fails.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> q, k = rng.standard_normal((4, 16)), rng.standard_normal((100, 16))
>>> v = rng.standard_normal((100, 8))
>>> wrong = _Problem.of(q, k, v, 0.125, None).attention()  # the kernel used half the scale
>>> diagnose(wrong, q, k, v, 0.25, None).split(":")[0]
'wrong scale'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EXPLAINS", "diagnose"]

#: A cause is named when it leaves at most this share of the exact answer's RMS error.
EXPLAINS: float = 0.1


@dataclass(frozen=True)
class _Problem:
    """The declared problem in float64, its raw products ``q k^T`` computed once (every
    candidate cause rescales or masks them; enough to tell bugs apart, not certified)."""

    qk: np.ndarray
    v: np.ndarray
    scale: float
    mask: Any

    @classmethod
    def of(cls, q: Any, k: Any, v: Any, scale: float, mask: Any) -> _Problem:
        q64, k64, v64 = (np.asarray(a).astype(np.float64) for a in (q, k, v))
        return cls(q64 @ np.swapaxes(k64, -1, -2), v64, scale, mask)

    @property
    def n(self) -> int:
        return int(self.qk.shape[-1])

    def scores(self, scale: float | None = None, mask: Any = "declared") -> np.ndarray:
        s = self.qk * (self.scale if scale is None else scale)
        mask = self.mask if isinstance(mask, str) else mask
        return s if mask is None else np.where(np.asarray(mask, bool), s, -np.inf)

    def attention(self, scale: float | None = None, mask: Any = "declared") -> np.ndarray:
        """Plain softmax attention at ``scale`` under ``mask`` (default: the declared)."""
        return self.weighted(None, self.scores(scale, mask))

    def weighted(self, weight: np.ndarray | None, s: np.ndarray | None = None) -> np.ndarray:
        """Softmax attention with key ``i``'s probability multiplied by ``weight[i]`` in O
        and l."""
        s = self.scores() if s is None else s
        m = np.max(s, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
            if weight is not None:
                p = p * weight
            return (p @ self.v) / np.sum(p, axis=-1, keepdims=True)

    def no_rescale(self, block: int) -> np.ndarray:
        """O summed over blocks, each ``exp(S_j - m_j) V_j`` at the running max ``m_j`` of
        its block and never rescaled, divided by the right row sum (a missed rescale)."""
        s = self.scores()
        m_run = np.full((*s.shape[:-1], 1), -np.inf)
        acc = np.zeros((*s.shape[:-1], self.v.shape[-1]))
        with np.errstate(invalid="ignore"):
            for lo in range(0, self.n, block):
                sj = s[..., lo : lo + block]
                m_run = np.maximum(m_run, np.max(sj, axis=-1, keepdims=True))
                p = np.exp(sj - np.where(np.isfinite(m_run), m_run, 0.0))
                acc = acc + p @ self.v[lo : lo + block]
            l = np.sum(np.exp(s - np.where(np.isfinite(m_run), m_run, 0.0)), axis=-1, keepdims=True)
            return acc / l


def _rms(out: np.ndarray, cand: np.ndarray) -> float:
    live = np.isfinite(cand) & np.isfinite(out)
    if not live.any():
        return math.inf
    return float(np.sqrt(np.mean((out[live] - cand[live]) ** 2)))


def diagnose(
    out: Any,
    q: Any,
    k: Any,
    v: Any,
    scale: float,
    mask: Any,
    *,
    lse_failed: bool = False,
    out_failed: bool = True,
) -> str:
    """One sentence naming the likely cause (module docstring), or ``""`` when none fits."""
    if lse_failed and not out_failed:
        return "lse inconsistent with out: out passes, the lse does not"
    o = np.asarray(out).astype(np.float64)
    if not np.isfinite(o).any():
        return ""
    prob = _Problem.of(q, k, v, scale, mask)
    base = _rms(o, prob.attention())
    if base == 0:
        return ""
    fits = [_scale_fit(o, prob), *_mask_fits(o, prob), *_dropped_block_fits(o, prob)]
    fits += _block_fits(o, prob)
    best = min(fits, key=lambda f: f[0])
    return best[1] if best[0] <= EXPLAINS * base else ""


#: A candidate cause: the RMS distance of the output from its altered problem, and the
#: sentence naming it.
_Fit = tuple[float, str]
#: The KV block sizes a kernel is likely to use.
_BLOCKS: tuple[int, ...] = (64, 128, 256, 512)


def _scale_fit(o: np.ndarray, prob: _Problem) -> _Fit:
    """Wrong scale: a golden-section search on ``log(scale'/scale)`` in ``[-log 4, log 4]``."""
    lo, hi = -math.log(4.0), math.log(4.0)
    g = (math.sqrt(5.0) - 1.0) / 2.0
    scale = prob.scale

    def err(t: float) -> float:
        return _rms(o, prob.attention(scale * math.exp(t)))

    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = err(a), err(b)
    for _ in range(24):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = err(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = err(b)
    t = a if fa < fb else b
    return (
        min(fa, fb),
        f"wrong scale: the output fits a softmax scale of {scale * math.exp(t):.6g} "
        f"({math.exp(t):.4g} x the declared {scale:.6g})",
    )


def _mask_fits(o: np.ndarray, prob: _Problem) -> list[_Fit]:
    """Masked keys leaking or missing: the mask widened or narrowed by one key at its
    edges (none without a mask)."""
    if prob.mask is None:
        return []
    mk = np.broadcast_to(np.asarray(prob.mask, bool), (*o.shape[:-1], prob.n))
    wide = mk.copy()
    wide[..., 1:] |= mk[..., :-1]
    wide[..., :-1] |= mk[..., 1:]
    narrow = mk.copy()
    narrow[..., 1:] &= mk[..., :-1]
    narrow[..., :-1] &= mk[..., 1:]
    return [
        (
            _rms(o, prob.attention(mask=wide)),
            "masked keys leaking: the output fits the mask widened by one key at its edges",
        ),
        (
            _rms(o, prob.attention(mask=narrow)),
            "masked keys missing: the output fits the mask narrowed by one key at its edges",
        ),
    ]


def _dropped_block_fits(o: np.ndarray, prob: _Problem) -> list[_Fit]:
    """A dropped block: the keys without the last partial block of each size."""
    n, mask = prob.n, prob.mask
    fits = []
    for blk in _BLOCKS:
        keep = (n // blk) * blk
        if 0 < keep < n:
            km = np.arange(n) < keep
            m2 = km if mask is None else (np.asarray(mask, bool) & km)
            fits.append(
                (
                    _rms(o, prob.attention(mask=m2)),
                    f"dropped block: the output fits the keys without the last partial block "
                    f"of {blk} (keys {keep}..{n - 1} left out)",
                )
            )
    return fits


def _block_fits(o: np.ndarray, prob: _Problem) -> list[_Fit]:
    """A block counted twice (the first, or the last partial one), and a missed rescale, for
    each block size shorter than the keys."""
    n = prob.n
    fits = []
    for blk in _BLOCKS:
        if n <= blk:
            continue
        for lo, hi, which in ((0, blk, "first"), ((n - 1) // blk * blk, n, "last")):
            w = np.ones(n)
            w[lo:hi] = 2.0
            fits.append(
                (
                    _rms(o, prob.weighted(w)),
                    f"doubled block: the output fits the {which} block of {blk} keys "
                    f"(keys {lo}..{hi - 1}) counted twice",
                )
            )
        fits.append(
            (
                _rms(o, prob.no_rescale(blk)),
                f"missed rescale: the output fits O accumulated over blocks of {blk} keys "
                "without its exp(m_old - m_new) rescale",
            )
        )
    return fits
