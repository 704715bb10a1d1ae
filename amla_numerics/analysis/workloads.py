"""Seeded attention workloads: the inputs every report row is measured on.

Every generator draws from ``numpy.random.default_rng(seed)`` only, builds float64 data,
and rounds it once to the input format (BF16 by default, ties to even), so a
``(name, head_dim, kv_len, rows, seed)`` tuple names the same bits on every machine.

========== ===================================================================================
name       what it stresses
========== ===================================================================================
random     Gaussian q, k, v (unit variance); scale ``1/sqrt(d)``: the average case.
peaky      ``random`` with q scaled by 6: scores spread over tens of nats, near-one-hot softmax.
drift      the row max grows every block: a ramp of ``drift_per_block`` nats per 512-key block is
           put on the last feature, so every block rescales (dn ~ -6 each time).
sink       key 0 is an attention sink: about 12 nats above every other key for every row.
mla        DeepSeek-V3 MLA decode, absorbed form: RMS-normalised latent rows, K = [latent, rope]
           with V = K[:, :dv] (``dv = 512`` at ``d = 576``, else ``dv = d``) and scale
           ``1/sqrt(d/3)`` (= ``1/sqrt(192)`` at 576).
adversarial zero V column 0 (AMLA's zero-operand hazard), keys 1-3 exact duplicates of key 0
           lifted ~8 nats (exact ties at the max), and a quarter of the keys pushed ~1000 nats
           down (exp underflow for them).
causal     ``random`` with a causal mask for queries spread over the sequence: row ``i`` (of
           ``M``) sits at position ``p_i = ceil((i + 1) N / M) - 1`` and attends keys
           ``j <= p_i`` (chunked prefill; the last row sees every key).
padding    ``random`` with left padding: the first ``N // 4`` keys are masked for every row
           (a left-padded batch element), so the first KV blocks are fully masked.
alibi      ``random`` with an additive ALiBi bias: ``-slope_i (N - 1 - j)`` nats, slopes
           ``2**(-(i mod 8 + 1))`` (eight heads' geometric slopes), the query at the last
           position: recent keys dominate, far keys are hundreds of nats down.
========== ===================================================================================

Masks follow :mod:`amla_numerics.inputs`: a boolean keep-mask or an additive float bias
(``-inf`` drops a key), (M, N), in :attr:`Workload.mask` (None: every key attends).

Examples
--------
>>> w = make_workload("drift", head_dim=64, kv_len=1024, rows=2, seed=0)
>>> w.q.shape, w.k.shape, w.v.shape, w.q.dtype.name
((2, 64), (1024, 64), (1024, 64), 'bfloat16')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amla_numerics.formats import BF16, Format, get_format
from amla_numerics.rounding import round_to

__all__ = ["WORKLOADS", "Workload", "gaussian_qkv", "load_workload", "make_workload"]

WORKLOADS: tuple[str, ...] = (
    "random",
    "peaky",
    "drift",
    "sink",
    "mla",
    "adversarial",
    "causal",
    "padding",
    "alibi",
)

_DRIFT_PER_BLOCK = 4.0  # nats per 512 keys
_SINK_GAP = 12.0  # nats


@dataclass(frozen=True)
class Workload:
    """Attention inputs: q (M, Dk), k (N, Dk), v (N, Dv) in the input format, the scale and
    an optional mask (M, N): boolean keep-mask or additive float bias."""

    name: str
    q: np.ndarray = field(repr=False)
    k: np.ndarray = field(repr=False)
    v: np.ndarray = field(repr=False)
    scale: float
    seed: int | None = None
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def head_dim(self) -> int:
        return int(self.q.shape[-1])

    @property
    def kv_len(self) -> int:
        return int(self.k.shape[-2])


def gaussian_qkv(
    seed: int, *, rows: int, kv_len: int, head_dim: int
) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
    """The standard normal ``q (rows, d)``, ``k (N, d)``, ``v (N, d)`` every workload starts from.

    Drawn in that order from ``numpy.random.default_rng(seed)``, which is returned too (for
    the draws a workload makes after them).

    Examples
    --------
    >>> _rng, q, k, v = gaussian_qkv(0, rows=2, kv_len=5, head_dim=4)
    >>> q.shape, k.shape, v.shape
    ((2, 4), (5, 4), (5, 4))
    """
    rng = np.random.default_rng(seed)
    d, n = int(head_dim), int(kv_len)
    q = rng.standard_normal((rows, d))
    k = rng.standard_normal((n, d))
    v = rng.standard_normal((n, d))
    return rng, q, k, v


def make_workload(
    name: str,
    *,
    head_dim: int,
    kv_len: int,
    rows: int = 16,
    seed: int = 0,
    fmt: Format | str = BF16,
) -> Workload:
    """Generate a named workload (see the module docstring).

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists them) or a size below 1.
    """
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")
    for arg, val in (("head_dim", head_dim), ("kv_len", kv_len), ("rows", rows)):
        if not isinstance(val, int | np.integer) or val < 1:
            raise ValueError(f"argument {arg!r} must be an integer >= 1, got {val!r}")
    fmt = get_format(fmt)
    rng, q, k, v = gaussian_qkv(seed, rows=rows, kv_len=kv_len, head_dim=head_dim)
    d, n = int(head_dim), int(kv_len)
    scale = 1.0 / np.sqrt(d)
    if name == "peaky":
        q *= 6.0
    elif name == "drift":
        # score_j gains scale * q[:, -1] * k[j, -1] = ramp_j with q[:, -1] = 1 / scale
        q[:, -1] = 1.0 / scale
        k[:, -1] = _DRIFT_PER_BLOCK * np.arange(n) / 512.0
    elif name == "sink":
        q[:, 0] = 1.0 / scale
        k[0, 0] = _SINK_GAP + 4.0
    elif name == "mla":
        latent = d - 64 if d > 64 else d
        k /= np.sqrt(np.mean(k[:, :latent] ** 2, axis=1, keepdims=True))  # RMSNorm, gamma = 1
        dv = 512 if d == 576 else d
        scale = 1.0 / np.sqrt(d / 3.0)
        kq = round_to(k, fmt)
        return Workload(name, round_to(q, fmt), kq, kq[:, :dv], float(scale), seed)
    elif name == "adversarial":
        if d < 2:
            raise ValueError("workload 'adversarial' needs head_dim >= 2")
        v[:, 0] = 0.0
        q[:, :2] = 1.0 / scale  # features 0 and 1 add k[j, 0] + k[j, 1] nats to every row
        k[1:4] = k[0]
        k[0:4, 0] = 8.0
        low = rng.permutation(np.arange(4, n))[: n // 4]
        k[low, 1] = -1000.0
    mask = _mask(name, rows, n)
    return Workload(
        name, round_to(q, fmt), round_to(k, fmt), round_to(v, fmt), float(scale), seed, mask
    )


def _mask(name: str, rows: int, n: int) -> np.ndarray | None:
    """The mask of the masked workloads (see the module docstring), else None."""
    if name == "causal":
        pos = -(-(np.arange(rows) + 1) * n // rows) - 1  # ceil((i + 1) N / M) - 1
        return np.arange(n)[None, :] <= pos[:, None]
    if name == "padding":
        keep = np.ones((rows, n), bool)
        keep[:, : n // 4] = False
        return keep
    if name == "alibi":
        slopes = 2.0 ** -(np.arange(rows) % 8 + 1.0)
        return -slopes[:, None] * (n - 1 - np.arange(n))[None, :].astype(np.float64)
    return None


def load_workload(path: str | Path, *, fmt: Format | str | None = None) -> Workload:
    """Load user inputs from a dump (``.npz`` or ``.safetensors``, read by
    :func:`amla_numerics.dumps.read_dump`) holding ``q``, ``k``, ``v`` and optionally
    ``scale`` and ``mask`` ((..., M, N), boolean keep-mask or additive float bias, ``-inf``
    drops a key).

    The arrays keep their exact values and dtype (bfloat16 and FP8 included; leading
    dimensions allowed); with ``fmt`` they are rounded to that format explicitly.

    Raises
    ------
    ValueError
        An unreadable/corrupt file, a missing array, wrong ranks, or mismatched dimensions
        (the message names it).
    """
    from amla_numerics.dumps import read_dump

    path = Path(path)
    try:
        dump = read_dump(path)
    except ValueError as exc:
        raise ValueError(f"cannot read workload file: {exc}") from None
    dump.require("q", "k", "v")
    arrays: dict[str, Any] = dump.arrays
    for key in ("q", "k", "v"):
        if arrays[key].ndim < 2:
            raise ValueError(
                f"array {key!r} in {str(path)!r} must be at least 2-D, got {arrays[key].shape}"
            )
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"shapes q {q.shape}, k {k.shape}, v {v.shape} in {str(path)!r} do not fit"
        )
    scale = float(arrays["scale"]) if "scale" in arrays else 1.0 / np.sqrt(q.shape[-1])
    mask = arrays.get("mask")
    if mask is not None:
        mask = np.asarray(mask)
        full = (*np.broadcast_shapes(q.shape[:-2], k.shape[:-2]), q.shape[-2], k.shape[-2])
        try:
            fits = np.broadcast_shapes(mask.shape, full) == full
        except ValueError:
            fits = False
        if not fits or (mask.dtype != bool and mask.dtype.kind != "f"):
            raise ValueError(
                f"array 'mask' in {str(path)!r} must be boolean or float broadcastable to "
                f"{full}, got {mask.dtype} {mask.shape}"
            )
        if mask.dtype.kind == "f" and (np.any(np.isnan(mask)) or np.any(np.isposinf(mask))):
            raise ValueError(f"array 'mask' in {str(path)!r} holds NaN or +inf")
    if fmt is not None:
        f = get_format(fmt)
        q, k, v = round_to(q, f), round_to(k, f), round_to(v, f)
    return Workload(path.stem, q, k, v, scale, None, mask)
