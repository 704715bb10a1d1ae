"""``attention``: the public entry point (method dispatch, mpmath fallback, jobs, cache).

method="mpmath": every row through :func:`~amla_numerics.reference.mp.attention_row`
(correctly rounded float64, mpf exact to ``dps`` digits), with a precision ladder: a sample
of rows is recomputed at ``2*dps`` and a disagreement raises RuntimeError.

method="fast": :func:`~amla_numerics.reference.fast.fast_problem`; every element is within
its certified bound (``fast.certified_attention`` returns the bounds).

method="auto": fast, then every element whose bound exceeds ``1e-3`` FP32 ULP at its value
(and every lse whose bound does) is recomputed with mpmath from the exact dot products.
If the inputs are beyond the fast path's exponent range, everything goes to mpmath.

Fully masked rows (every key ``-inf``): the output row is NaN and the lse is ``-inf``.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

import mpmath
import numpy as np

from amla_numerics.formats import FP32
from amla_numerics.reference import cache as _cache
from amla_numerics.reference._inputs import METHODS, Problem, as_f64, check_dps, prepare
from amla_numerics.reference.exactdot import exact_dot_any
from amla_numerics.reference.fast import FastUnavailable, fast_problem
from amla_numerics.reference.mp import attention_row
from amla_numerics.ulp import ulp

__all__ = ["AUTO_ULP_FP32", "AUTO_ULP_FP64", "attention"]

#: method="auto" recomputes elements whose certified bound exceeds this many FP32 ULPs.
AUTO_ULP_FP32 = 1e-3
#: The ``auto_ulp`` that judges FP64 outputs: ``2**-29`` FP32 ULP is one FP64 ULP (the fast
#: path's bound is about half of one: its final float64 rounding), so the reference is
#: within one FP64 ULP, or correctly rounded.
AUTO_ULP_FP64 = 2.0**-29


def _raw(x: Any) -> Any:
    return x._mpf_ if isinstance(x, mpmath.mpf) else x


def _cooked(x: Any) -> Any:
    return mpmath.mp.make_mpf(x) if isinstance(x, tuple) else x


def _row_task(args: tuple) -> tuple:
    """Worker: one row of the mpmath path (top level so a process pool can pickle it).

    mpf values cross the process boundary as raw ``_mpf_`` tuples: pickling an mpf
    rebuilds it at the receiving context's precision, which would round the exact dots.
    """
    dots_row, mask_row, v, scale, dps, cols, want_lse = args
    dots_row = [_cooked(d) for d in dots_row]
    r = attention_row(dots_row, mask_row, v, scale, dps, cols, want_lse=want_lse)
    return r.out, {c: _raw(x) for c, x in r.out_mpf.items()}, r.lse, _raw(r.lse_mpf)


def _unpack(res: tuple) -> tuple:
    out, out_mpf, lse, lse_mpf = res
    return out, {c: _cooked(x) for c, x in out_mpf.items()}, lse, _cooked(lse_mpf)


def _run_rows(tasks: list[tuple], jobs: int) -> list[tuple]:
    if jobs <= 1 or len(tasks) <= 1:
        return [_unpack(_row_task(t)) for t in tasks]
    import multiprocessing as mp_

    ctx = mp_.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
        chunk = max(1, len(tasks) // (4 * jobs))
        return [_unpack(r) for r in ex.map(_row_task, tasks, chunksize=chunk)]


def _mp_problem(
    prob: Problem, dps: int, jobs: int, want_lse: bool, rows=None, dots=None, ladder: bool = True
):
    """The mpmath path over all rows, or over ``rows``: {(b, i): cols or None} when given."""
    nb, m, _ = prob.q.shape
    dv = prob.v_in.shape[2]
    if dots is None:
        dots = [exact_dot_any(prob.q[b], as_f64(prob.k_in[b])) for b in range(nb)]
    if rows is None:
        rows = {(b, i): None for b in range(nb) for i in range(m)}
    keys = list(rows)
    tasks = []
    v64: dict[int, np.ndarray] = {}  # v of the batch elements with rows to do, as float64
    for b, i in keys:
        mrow = None if prob.mask is None else prob.mask[b, i]
        raw = [d._mpf_ for d in dots[b].row_mpf(i)]
        if b not in v64:
            v64[b] = as_f64(prob.v_in[b])
        tasks.append((raw, mrow, v64[b], prob.scale, dps, rows[(b, i)], want_lse))
    results = _run_rows(tasks, jobs)
    if ladder and tasks:
        _ladder(tasks, results, dps)
    return dict(zip(keys, results, strict=True)), dv


def _ladder(tasks: list, results: list, dps: int) -> None:
    """Recompute the first and the last row at 2*dps; raise if any value disagrees."""
    picks = sorted({0, len(tasks) - 1})
    for idx in picks:
        t = list(tasks[idx])
        t[4] = 2 * dps
        hi = _unpack(_row_task(tuple(t)))
        lo = results[idx]
        tol = mpmath.mpf(10) ** (-dps)
        for c, val in lo[0].items():
            same = (val == hi[0][c]) or (np.isnan(val) and np.isnan(hi[0][c]))
            a, b = lo[1][c], hi[1][c]
            close = mpmath.isnan(a) or abs(a - b) <= tol * abs(b) or a == b
            if not (same and close):
                raise RuntimeError(
                    f"precision ladder: column {c} differs between dps={dps} and {2 * dps}"
                )


def _loose(bound: np.ndarray, y: np.ndarray, tol: float = AUTO_ULP_FP32) -> np.ndarray:
    """``bound > tol * ulp_FP32(y)``, elementwise.

    ``2**-24 |y| <= ulp_FP32(y)`` everywhere, so ``bound <= tol 2**-24 |y|`` already
    proves an element tight; only the others pay for the exact :func:`ulp`.
    """
    with np.errstate(invalid="ignore"):
        maybe = ~(bound <= tol * 2.0**-24 * np.abs(y))
    out = np.zeros(bound.shape, dtype=bool)
    if maybe.any():
        out[maybe] = ~(bound[maybe] <= tol * ulp(y[maybe], FP32))
    return out


def attention(
    q: Any,
    k: Any,
    v: Any,
    scale: Any = None,
    *,
    mask: Any = None,
    method: str = "auto",
    dps: int = 50,
    return_lse: bool = False,
    return_mpf: bool = False,
    jobs: int = 1,
    cache: bool = False,
    auto_ulp: float = AUTO_ULP_FP32,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Softmax attention ``softmax(scale q k^T + mask) v`` against the exact value.

    Parameters
    ----------
    q : array_like, shape (..., M, Dk)
    k : array_like, shape (..., N, Dk)
    v : array_like, shape (..., N, Dv)
        Float arrays (float64, float32, float16, bfloat16), taken exactly; leading
        dimensions broadcast.
    scale : float, Fraction, mpmath.mpf or None
        Taken exactly; None means the exact (irrational unless Dk is a square) ``1/sqrt(Dk)``.
    mask : array_like, optional
        Additive float mask broadcastable to (..., M, N), ``-inf`` allowed (drops a key), or
        a boolean mask where True keeps a key. A fully masked row gives NaN outputs and
        ``lse = -inf``.
    method : {"auto", "fast", "mpmath"}
        "mpmath": correctly rounded everywhere (slow). "fast": the certified vectorised
        oracle (every element within its bound, see
        :func:`~amla_numerics.reference.fast.certified_attention`). "auto":
        fast, then every element whose bound exceeds 1e-3 FP32 ULP goes to mpmath.
    dps : int
        Decimal digits of the mpmath path (>= 15).
    return_lse : bool
        Also return the per-row ``log sum exp`` of the scores, float64 (..., M).
    return_mpf : bool
        Return an object array of mpmath.mpf (exact to ``dps`` digits) instead of float64;
        forces method="mpmath".
    jobs : int
        Worker processes for the mpmath rows (results identical to a serial run).
    cache : bool
        Use the content-addressed disk cache (also on when ``AMLA_NUMERICS_CACHE`` is set).
    auto_ulp : float
        method="auto"'s threshold in FP32 ULPs (default :data:`AUTO_ULP_FP32`, 1e-3); to judge
        FP64 outputs, :data:`AUTO_ULP_FP64` (one FP64 ULP).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        ``out`` of shape (..., M, Dv), and ``lse`` (..., M) when ``return_lse``.

    Raises
    ------
    ValueError
        Shape mismatch, NaN/inf inputs, empty arrays, ``dps < 15``, unknown ``method``,
        bad ``jobs``; method="fast" on inputs beyond its exponent range.
    RuntimeError
        The precision ladder found a disagreement between ``dps`` and ``2*dps``.

    Notes
    -----
    method="mpmath": ``y = fl64(out)`` exactly (Ziv's test on ``out (1 +- beta)``,
    ``beta <= 10**-dps``). method="fast": ``|y - out| <= bound`` (module
    :mod:`amla_numerics.reference.fast`). method="auto": ``|y - out| <= auto_ulp ulp_FP32(y)``
    or ``y = fl64(out)``.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.array([[1.0, 0.0]]); k = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> v = np.array([[1.0], [0.0]])
    >>> attention(q, k, v, 1.0, method="mpmath", dps=20)
    array([[0.73105858]])
    >>> out, lse = attention(q, k, v, 1.0, return_lse=True)
    >>> round(float(lse[0]), 12)
    1.313261687518
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for argument 'method'; valid: {METHODS}")
    dps = check_dps(dps)
    if isinstance(auto_ulp, bool) or not isinstance(auto_ulp, int | float) or not auto_ulp > 0:
        raise ValueError(f"argument 'auto_ulp' must be a positive number, got {auto_ulp!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int | np.integer) or jobs < 1:
        raise ValueError(f"argument 'jobs' must be a positive int, got {jobs!r}")
    prob = prepare(q, k, v, scale, mask)
    if return_mpf:
        method = "mpmath"
    store = _cache.store_for(cache)
    key = None
    if store is not None:
        key = _cache.key_for(prob, method, dps, return_lse, return_mpf, auto_ulp)
        hit = store.load(key)
        if hit is not None:
            return _finish(hit, return_lse)
    result = _compute(prob, method, dps, return_lse, return_mpf, int(jobs), float(auto_ulp))
    if store is not None and key is not None:
        store.save(key, result)
    return _finish(result, return_lse)


def _finish(result: dict, return_lse: bool):
    out = result["out"]
    return (out, result["lse"]) if return_lse else out


def _compute(
    prob: Problem,
    method: str,
    dps: int,
    want_lse: bool,
    want_mpf: bool,
    jobs: int,
    tol: float = AUTO_ULP_FP32,
):
    shp = prob.batch_shape
    nb, m, _ = prob.q.shape
    dv = prob.v_in.shape[2]
    fast = None
    if method in ("fast", "auto"):
        try:
            fast = fast_problem(prob, want_lse)
        except FastUnavailable:
            if method == "fast":
                raise
    if fast is not None and method == "fast":
        return {"out": fast.out, "lse": fast.lse}
    if fast is None:  # the mpmath path everywhere
        res, _ = _mp_problem(prob, dps, jobs, want_lse)
        kind = object if want_mpf else np.float64
        out = np.empty((nb, m, dv), dtype=kind)
        lse = np.empty((nb, m), dtype=kind)
        for (b, i), (o, om, ls, lm) in res.items():
            src = om if want_mpf else o
            out[b, i] = [src[c] for c in range(dv)]
            val = lm if want_mpf else ls
            lse[b, i] = val if val is not None else (mpmath.mpf("nan") if want_mpf else np.nan)
        return {"out": out.reshape(*shp, m, dv), "lse": lse.reshape(*shp, m)}
    # auto: recompute the elements whose certificate is too loose
    out = fast.out.reshape(nb, m, dv).copy()
    bound = fast.bound.reshape(nb, m, dv)
    lse = fast.lse.reshape(nb, m).copy()
    bad = _loose(bound, out, tol)
    bad &= ~np.isnan(out)  # fully masked rows are exact NaN
    rows: dict = {}
    for b, i, c in zip(*np.nonzero(bad), strict=True):
        rows.setdefault((int(b), int(i)), []).append(int(c))
    lse_rows = set()
    if want_lse:
        lb = fast.lse_bound.reshape(nb, m)
        for b, i in zip(*np.nonzero(_loose(lb, lse, tol) & np.isfinite(lse)), strict=True):
            lse_rows.add((int(b), int(i)))
            rows.setdefault((int(b), int(i)), [])
    if rows:
        res, _ = _mp_problem(prob, dps, jobs, want_lse, rows=rows, dots=fast.dots)
        for (b, i), (o, _, ls, _) in res.items():
            for c, val in o.items():
                out[b, i, c] = val
            if (b, i) in lse_rows:
                lse[b, i] = ls
    return {"out": out.reshape(*shp, m, dv), "lse": lse.reshape(*shp, m)}
