"""What each rescaling variant costs, as data movement and vector work (no fudge factors).

Each variant of :data:`amla_numerics.variants.VARIANTS` maps to a :class:`RescaleCost`:
bytes per O element moved GM -> UB, UB -> GM (plain) and UB -> GM (atomic add), vector
passes over the O tile, per-row scalar-vector work, extra passes over the score tile,
the O storage width, and the fraction of blocks that rescale at all.

==============  ======  =======  ========  ==========  =====================================
variant         read    write    atomic    O passes    what the kernel does per block
==============  ======  =======  ========  ==========  =====================================
fa_fp32         4       4        0         1           O GM->UB, FP32 multiply, UB->GM
fa_bf16         2       2        0         3           same with O in BF16 (cast, mul, cast)
amla            0       0        4         1           broadcast N, INT32 atomic add onto O
amla_nocomp     0       0        4         1           same, fewer per-row ops (eps = 0)
amla_fp32r      0       0        4         1           same, no BF16 rounding of r
amla_exactcomp  4       4        4         2           INT32 atomic add + FP32 cof multiply
amla_guarded    4       4        0         5           O GM->UB, exponent check, add, mul, select
lazy            4 p     4 p      0         1 p         fa_fp32 on a fraction p of the blocks
naive           0       0        0         0           two-pass: S and P spill to GM
==============  ======  =======  ========  ==========  =====================================

Examples
--------
>>> c = rescale_cost("amla")
>>> c.o_atomic_bytes, c.o_read_bytes, c.o_passes
(4, 0, 1)
>>> rescale_cost("lazy", rescale_prob=0.25).probability, rescale_cost("lazy").probability
(0.25, 0.0)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amla_numerics.variants import VARIANTS, check_variant

__all__ = [
    "DEFAULT_LAZY_RESCALE_PROB",
    "SOFTMAX_PASSES",
    "RescaleCost",
    "rescale_cost",
    "rescale_prob_from_trace",
]

#: Vector passes (FP32 width) over the score tile for the online softmax: scale, row max,
#: subtract, exp, row sum, cast to BF16, and the update of m and l (assumption).
SOFTMAX_PASSES: float = 6.0

#: Default fraction of blocks a lazy (FA4-style, tau = 8 in log2 units) rescale touches.
#: Measured with :func:`rescale_prob_from_trace` on the emulator's lazy trace of the seeded
#: ``mla`` workload (``amla_numerics.analysis.workloads``: 128 rows, 576/512 dims, 16384
#: tokens, 512-token blocks, seed 0): no block rescales. Other workloads differ (``peaky``
#: 0.84, ``drift`` 1.0; docs/pipeline.md); the report passes its own measured value.
DEFAULT_LAZY_RESCALE_PROB: float = 0.0


@dataclasses.dataclass(frozen=True)
class RescaleCost:
    """The per-block cost of one variant's rescale of the O accumulator.

    Attributes
    ----------
    variant : str
        Variant name.
    o_read_bytes, o_write_bytes, o_atomic_bytes : float
        Bytes per O element read GM -> UB, written UB -> GM, atomically added UB -> GM.
    o_passes : float
        Vector passes (256-byte repeats at FP32 width) over the O tile.
    row_ops : float
        Vector ops on per-row vectors (m, n, r^, cof, eps, N ...).
    softmax_extra_passes : float
        Passes over the score tile beyond :data:`SOFTMAX_PASSES` (AMLA folds r^ into P).
    o_store_bytes : int
        Bytes per O element in GM (4 FP32, 2 BF16); the Fixpipe's atomic add of PV uses it.
    probability : float
        Fraction of blocks (after the first) that rescale.
    two_pass : bool
        The non-flash schedule (naive): S for the whole row to GM, then softmax, then PV.
    """

    variant: str
    o_read_bytes: float = 0.0
    o_write_bytes: float = 0.0
    o_atomic_bytes: float = 0.0
    o_passes: float = 0.0
    row_ops: float = 0.0
    softmax_extra_passes: float = 0.0
    o_store_bytes: int = 4
    probability: float = 1.0
    two_pass: bool = False

    @property
    def touches_o(self) -> bool:
        """Whether the Vector side reads or writes O every (rescaled) block."""
        return (self.o_read_bytes + self.o_write_bytes + self.o_atomic_bytes) > 0


_TABLE: dict[str, RescaleCost] = {
    "naive": RescaleCost("naive", row_ops=2, two_pass=True),
    "fa_fp32": RescaleCost("fa_fp32", 4, 4, 0, 1, row_ops=2),
    "fa_bf16": RescaleCost("fa_bf16", 2, 2, 0, 3, row_ops=2, o_store_bytes=2),
    "amla": RescaleCost("amla", 0, 0, 4, 1, row_ops=12, softmax_extra_passes=1),
    "amla_nocomp": RescaleCost("amla_nocomp", 0, 0, 4, 1, row_ops=7, softmax_extra_passes=1),
    "amla_fp32r": RescaleCost("amla_fp32r", 0, 0, 4, 1, row_ops=11, softmax_extra_passes=1),
    "amla_exactcomp": RescaleCost("amla_exactcomp", 4, 4, 4, 2, row_ops=12, softmax_extra_passes=1),
    "amla_guarded": RescaleCost("amla_guarded", 4, 4, 0, 5, row_ops=12, softmax_extra_passes=1),
    "lazy": RescaleCost("lazy", 4, 4, 0, 1, row_ops=4, probability=DEFAULT_LAZY_RESCALE_PROB),
    # TEMPORARY (fp8 branch) until the pipe branch's FP8 entries land: the rescale of O is
    # fa_fp32's / amla's; the halved P bytes are not modelled here.
    "fa_fp8": RescaleCost("fa_fp8", 4, 4, 0, 1, row_ops=2),
    "amla_fp8": RescaleCost("amla_fp8", 0, 0, 4, 1, row_ops=12, softmax_extra_passes=1),
    "fa4": RescaleCost("fa4", 4, 4, 0, 1, row_ops=4, probability=DEFAULT_LAZY_RESCALE_PROB),
}
if set(_TABLE) != set(VARIANTS):  # pragma: no cover - guards the shared name list
    raise ImportError(
        f"pipeline rescale costs out of sync with VARIANTS: {sorted(set(_TABLE) ^ set(VARIANTS))}"
    )


def rescale_cost(variant: str, rescale_prob: float | None = None) -> RescaleCost:
    """The :class:`RescaleCost` of ``variant``.

    Parameters
    ----------
    variant : str
        One of :data:`amla_numerics.variants.VARIANTS`.
    rescale_prob : float, optional
        For ``lazy`` only: the measured fraction of blocks that rescale
        (default :data:`DEFAULT_LAZY_RESCALE_PROB`).

    Examples
    --------
    >>> rescale_cost("fa_fp32", rescale_prob=0.5)
    Traceback (most recent call last):
    ...
    ValueError: rescale_prob applies only to variant 'lazy', got variant 'fa_fp32'
    """
    check_variant(variant, "rescale")
    cost = _TABLE[variant]
    if rescale_prob is None:
        return cost
    if variant != "lazy":
        raise ValueError(f"rescale_prob applies only to variant 'lazy', got variant {variant!r}")
    if (
        isinstance(rescale_prob, bool)
        or not isinstance(rescale_prob, int | float)
        or not (0.0 <= rescale_prob <= 1.0)
    ):
        raise ValueError(f"rescale_prob must be a number in [0, 1], got {rescale_prob!r}")
    return dataclasses.replace(cost, probability=float(rescale_prob))


def rescale_prob_from_trace(rescaled: object, group_rows: int | None = None) -> float:
    """The per-block rescale probability of a lazy run, from the emulator's trace.

    A vector core rescales a group of rows if *any* row in it needs it, so the
    probability is the fraction of (block, row group) pairs, over blocks 1 .. N-1, in
    which at least one row rescaled.

    Parameters
    ----------
    rescaled : array_like of bool, shape (n_blocks, ..., M)
        ``Trace.rescaled`` of :func:`amla_numerics.flash.emulator.attention` with
        ``variant="lazy"`` and ``trace=True`` (block 0 is ignored).
    group_rows : int, optional
        Rows decided together (default: all M rows of the last axis).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)
    >>> rescale_prob_from_trace(r), rescale_prob_from_trace(r, group_rows=2)
    (0.6666666666666666, 0.3333333333333333)
    """
    arr = np.asarray(rescaled)
    if arr.dtype != bool or arr.ndim < 2:
        raise ValueError(
            "rescaled must be a boolean array of shape (n_blocks, ..., M), got "
            f"dtype {arr.dtype} and {arr.ndim} dimension(s)"
        )
    if arr.shape[0] < 2:
        raise ValueError("rescaled must cover at least 2 blocks (block 0 never rescales)")
    m = arr.shape[-1]
    g = m if group_rows is None else group_rows
    if isinstance(g, bool) or not isinstance(g, int) or g < 1 or m % g:
        raise ValueError(f"group_rows must be a positive divisor of M = {m}, got {group_rows!r}")
    later = arr[1:].reshape(arr.shape[0] - 1, -1, m // g, g)
    return float(later.any(axis=-1).mean())
