"""Input statistics: what the bounds read of q, k, v and the mask, computed once.

The exact (float64) scores and softmax weights, the magnitudes ``scale |q||k|``, ``|V|``,
``|out|``, the formats the inputs are exactly representable in, and the keys reordered for
a reverse KV visit (``docs/bounds.md`` section 1, the frame; section 6, the KV order).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import _contains
from amla_numerics.analysis.bounds.arrays import _mm
from amla_numerics.flash.checks import check_inputs  # the emulator's argument checks
from amla_numerics.formats import get_format
from amla_numerics.rounding import round_to
from amla_numerics.variants import DEFAULT_C, DEFAULT_TAU

__all__ = ["BoundInputs", "bound_inputs", "softmax_weights"]


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
    with np.errstate(over="ignore"):  # |V| beyond 1.3e154: inf (the bound's sums take it)
        v_sq = np.swapaxes(v_t * v_t, -1, -2)
    return BoundInputs(
        head_dim=int(q64.shape[-1]),
        kv_len=int(k64.shape[-2]),
        s=s,
        w=w,
        qk_abs=abs(scale) * (qa @ np.swapaxes(ka, -1, -2)),
        v_abs=v_abs,
        v_sq=v_sq,
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
