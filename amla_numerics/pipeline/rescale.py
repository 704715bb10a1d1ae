"""What each rescaling variant costs, as data movement and vector work (no fudge factors).

Each variant of :data:`amla_numerics.variants.VARIANTS`, plus the model-only designs of
:data:`MODEL_DESIGNS`, maps to a :class:`RescaleCost`: where the P V product goes (the
``design``), bytes per O element moved GM -> UB, UB -> GM (plain) and UB -> GM (atomic
add), vector passes over the O tile, per-row vector work, extra passes over the score
tile, the O storage width, the bytes of P, and the fraction of blocks that rescale.

Designs (how the P V product of a block meets the accumulator O):

- ``atomic``: the Fixpipe atomically adds P V into O in GM; the Vector rescales O in GM
  before that (AMLA: an INT32 atomic add of N onto O, CANN FIA AMLA path,
  ``FiaBlockVecNonQuantMla::AmlaVecCompute`` / ``ProcessAmlaNupdate`` in hicann/ops-transformer
  ``attention/common/op_kernel/arch32/fia_block_vec_nonquant_mla.h``; ``fa_bf16``,
  ``lazy``, ``amla_guarded``, ``amla_exactcomp`` as stated below).
- ``workspace``: the Fixpipe writes P V to a ping-pong workspace; a Vector stage of its
  own reads the partial AND the old O, RowMuls then Add, writes O (CANN's non-AMLA MLA
  path: ``IncreFlashAttentionAttenPreloadMla::DealBmm2ResBaseBlock`` in
  ``attention/incre_flash_attention/op_kernel/incre_flash_attention_preload_mla.h`` of
  hicann/ops-transformer; the first block of a piece only copies).
- ``ub``: as ``workspace`` but O stays resident in UB, which only fits with fewer rows per
  core (64-row tiles): the partial is read, O never leaves UB until the end.

==============  =========  ======  =======  ========  ========  =============================
variant         design     read    write    atomic    O passes  what the kernel does per block
==============  =========  ======  =======  ========  ========  =============================
fa_fp32         workspace  4+4     4        0         2         partial + O in, RowMuls, Add, O out
fa_fp32_ub      ub         4       0        0         2         partial in, RowMuls, Add (O in UB)
fa_bf16         atomic     2       2        0         3         O GM->UB, cast, mul, cast (BF16 O)
amla            atomic     0       0        4         1         broadcast N, INT32 atomic add onto O
amla_nocomp     atomic     0       0        4         1         same, fewer per-row ops (eps = 0)
amla_fp32r      atomic     0       0        4         1         same, no BF16 rounding of r
amla_exactcomp  atomic     4       4        4         2         INT32 atomic add + FP32 cof multiply
amla_guarded    atomic     4       4        0         5         O in, exponent test, add, mul, sel.
lazy            atomic     4 p     4 p      0         1 p       FP32 multiply on a fraction p
naive           (2-pass)   0       0        0         0         S and P spill to GM
fa_fp8          workspace  4+4     4        0         2         fa_fp32 with P cast to FP8 (1 byte)
amla_fp8        atomic     0       0        4         1         amla with P cast to FP8 (1 byte)
fa4             atomic     4 p     4 p      0         1 p       lazy + software exp2 (+6 S passes)
skip_scale      ub         4       0        0         1 + p     partial in, Add; RowMuls on p (UB)
==============  =========  ======  =======  ========  ========  =============================

``fa_bf16`` accumulates P V in BF16: numerically unusable (see the report), so its speed is
not a like-for-like option. ``fa_fp8`` / ``amla_fp8`` halve the bytes of P (FP8, the
FlashAttention-3 trick); the matrix rate is left at the BF16 rate (an assumption: the
Ascend 910 Cube has no FP8 mode). Costs for names not yet in ``VARIANTS`` are tolerated
(another branch may add them); every name in ``VARIANTS`` must have a cost.

Examples
--------
>>> c = rescale_cost("amla")
>>> c.o_atomic_bytes, c.o_read_bytes, c.o_passes, c.design
(4, 0, 1, 'atomic')
>>> rescale_cost("fa_fp32").design, rescale_cost("fa_fp32_ub").design
('workspace', 'ub')
>>> rescale_cost("lazy", rescale_prob=0.25).probability, rescale_cost("lazy").probability
(0.25, 0.0)
"""

from __future__ import annotations

import dataclasses

from amla_numerics.variants import VARIANTS, spec

__all__ = [
    "CONDITIONAL_VARIANTS",
    "DEFAULT_LAZY_RESCALE_PROB",
    "DESIGNS",
    "MODEL_DESIGNS",
    "MODEL_VARIANTS",
    "SOFTMAX_PASSES",
    "RescaleCost",
    "check_model_variant",
    "rescale_cost",
    "rows_per_decision",
]

#: Plain vector passes (FP32 width) over the score tile for the online softmax: scale,
#: row max, subtract, row sum, cast to BF16 (assumption: one pass each). The exp is
#: charged separately, at the hardware's ``exp_cost_per_repeat`` (a multi-cycle op).
SOFTMAX_PASSES: float = 5.0

#: How the P V product of a block meets O (see the module docstring).
DESIGNS: tuple[str, ...] = ("atomic", "workspace", "ub")

#: Model-only designs that are not numerics variants (their numerics equal the named one).
MODEL_DESIGNS: dict[str, str] = {"fa_fp32_ub": "fa_fp32"}

#: Default fraction of blocks a lazy (FA4-style, tau = 8 in log2 units) rescale touches.
#: Measured from the emulator's lazy trace (per row group: the numerics side's one definition)
#: of the seeded
#: ``mla`` workload (``amla_numerics.analysis.workloads``: 128 rows, 576/512 dims, 16384
#: tokens, 512-token blocks, seed 0): no block rescales. Other workloads differ (``peaky``
#: 0.84, ``drift`` 1.0; docs/pipeline.md); the report passes its own measured value.
DEFAULT_LAZY_RESCALE_PROB: float = 0.0


@dataclasses.dataclass(frozen=True)
class RescaleCost:
    """The per-block cost of one variant's update of the O accumulator.

    Attributes
    ----------
    variant : str
        Variant name.
    o_read_bytes, o_write_bytes, o_atomic_bytes : float
        Bytes per O element read GM -> UB, written UB -> GM, atomically added UB -> GM
        (the old O; a ``workspace``/``ub`` design reads the P V partial besides).
    o_passes : float
        Vector passes (256-byte repeats at FP32 width) over the O tile.
    row_ops : float
        Vector ops on per-row vectors (m, n, r^, cof, eps, N ...).
    softmax_extra_passes : float
        Passes over the score tile beyond :data:`SOFTMAX_PASSES` (AMLA folds r^ into P).
    o_store_bytes : int
        Bytes per O element in GM (4 FP32, 2 BF16); the Fixpipe's add or write of P V uses it.
    probability : float
        Fraction of blocks (after the first) that rescale.
    two_pass : bool
        The non-flash schedule (naive): S for the whole row to GM, then softmax, then PV.
    design : str
        ``"atomic"``, ``"workspace"`` or ``"ub"`` (:data:`DESIGNS`).
    p_bytes : int
        Bytes per element of P (A) between the Vector and the Cube (2 BF16, 1 FP8).
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
    design: str = "atomic"
    p_bytes: int = 2

    @property
    def touches_o(self) -> bool:
        """Whether the Vector side reads or writes O every (rescaled) block."""
        return (self.o_read_bytes + self.o_write_bytes + self.o_atomic_bytes) > 0


def _cost(
    variant: str,
    read: float = 0.0,
    write: float = 0.0,
    atomic: float = 0.0,
    passes: float = 0.0,
    *,
    row_ops: float,
    design: str = "atomic",
    software_exp_passes: float = 0.0,
) -> RescaleCost:
    """A variant's cost: the data movement and vector work given, the rest read from the
    numerics variant's :class:`~amla_numerics.variants.VariantSpec` (a model-only design
    from the variant it equals, :data:`MODEL_DESIGNS`): the O storage width, the P width
    (1 byte with an FP8 P cast), the fold's extra pass over the score tile, a conditional
    rescale's default probability (a stale max), the two-pass schedule (untiled)."""
    sp = spec(MODEL_DESIGNS.get(variant, variant))
    extra: float = 1 if sp.fold is not None else 0.0  # AMLA folds r^ into P: one pass
    return RescaleCost(
        variant,
        read,
        write,
        atomic,
        passes,
        row_ops=row_ops,
        softmax_extra_passes=extra + software_exp_passes,
        o_store_bytes=2 if sp.o_storage == "bf16" else 4,
        probability=1.0 if sp.stale_max is None else DEFAULT_LAZY_RESCALE_PROB,
        two_pass=not sp.tiled,
        design=design,
        p_bytes=1 if sp.p_cast is not None else 2,
    )


_COSTS: dict[str, RescaleCost] = {
    c.variant: c
    for c in (
        _cost("naive", row_ops=2),
        _cost("fa_fp32", 4, 4, 0, 2, row_ops=2, design="workspace"),
        _cost("fa_fp32_ub", 0, 0, 0, 2, row_ops=2, design="ub"),
        _cost("fa_bf16", 2, 2, 0, 3, row_ops=2),
        _cost("amla", 0, 0, 4, 1, row_ops=12),
        _cost("amla_nocomp", 0, 0, 4, 1, row_ops=7),
        _cost("amla_fp32r", 0, 0, 4, 1, row_ops=11),
        _cost("amla_exactcomp", 4, 4, 4, 2, row_ops=12),
        _cost("amla_guarded", 4, 4, 0, 5, row_ops=12),
        _cost("lazy", 4, 4, 0, 1, row_ops=4),
        _cost("fa_fp8", 4, 4, 0, 2, row_ops=2, design="workspace"),
        _cost("amla_fp8", 0, 0, 4, 1, row_ops=12),
        # fa4: lazy's conditional rescale of O, plus FA4's software exp2 (docs/numerics.md
        # section 13): the scale-folding FMA, the fraction split, a degree-3 Horner polynomial
        # and the exponent add, about 6 FP32 operations per score, charged as extra passes
        # over the score tile. An upper estimate: the exp unit's own cost is kept too,
        # although FA4 sends only part of the columns to the polynomial (that split is not
        # modelled).
        _cost("fa4", 4, 4, 0, 1, row_ops=4, software_exp_passes=6),
        # skip_scale: DeepSeek's Ascend skip-scale (FlashMLA docs): O resident in UB (no
        # atomics), the P V partial read from the workspace and added every block (a block
        # that does not rescale costs the one pass of a piece's first block), RowMuls + Add
        # (2 passes) on the fraction p of blocks whose max grew past tau (nats)
        _cost("skip_scale", 0, 0, 0, 2, row_ops=4, design="ub"),
    )
}
#: Variants whose rescale happens on a measured fraction of blocks (take ``rescale_prob``).
CONDITIONAL_VARIANTS: tuple[str, ...] = ("lazy", "skip_scale")
_MISSING = set(VARIANTS) - set(_COSTS)
if _MISSING:  # pragma: no cover - guards the shared name list (extra entries are fine)
    raise ImportError(f"pipeline rescale costs missing for variants: {sorted(_MISSING)}")

#: Every name the pipeline model accepts: the numerics variants, then the model-only designs.
MODEL_VARIANTS: tuple[str, ...] = (*VARIANTS, *(k for k in _COSTS if k not in VARIANTS))


def check_model_variant(name: object, argument: str = "rescale") -> str:
    """Return ``name`` if the pipeline model can cost it, else raise a ValueError naming them.

    Examples
    --------
    >>> check_model_variant("fa_fp32_ub")
    'fa_fp32_ub'
    >>> check_model_variant("fp64")
    Traceback (most recent call last):
    ...
    ValueError: unknown variant 'fp64' for argument 'rescale'; valid: ...
    """
    if not isinstance(name, str) or name not in MODEL_VARIANTS:
        raise ValueError(
            f"unknown variant {name!r} for argument {argument!r}; "
            f"valid: {', '.join(MODEL_VARIANTS)}"
        )
    return name


def rows_per_decision(m_tile: int = 256, vector_per_core: int = 2) -> int:
    """Rows one vector core decides a lazy rescale for together (its share of a row tile).

    The numerics side turns the emulator's lazy trace into the rescale probability per
    group of this many rows (``amla_numerics.flash.rescale_probability(trace.rescaled,
    group_rows)``, the one definition; the pipeline never imports the emulator and takes
    the number): the Vector core rescales its whole O tile if any of its rows needs it.

    Examples
    --------
    >>> rows_per_decision()
    128
    """
    return m_tile // vector_per_core


def rescale_cost(variant: str, rescale_prob: float | None = None) -> RescaleCost:
    """The :class:`RescaleCost` of ``variant``.

    Parameters
    ----------
    variant : str
        One of :data:`amla_numerics.variants.VARIANTS`.
    rescale_prob : float, optional
        For ``lazy`` and ``skip_scale`` only: the measured fraction of blocks that rescale
        (default :data:`DEFAULT_LAZY_RESCALE_PROB`).

    Examples
    --------
    >>> rescale_cost("fa_fp32", rescale_prob=0.5)
    Traceback (most recent call last):
    ...
    ValueError: rescale_prob applies only to variant 'lazy' or 'skip_scale', got variant 'fa_fp32'
    """
    check_model_variant(variant, "rescale")
    cost = _COSTS[variant]
    if rescale_prob is None:
        return cost
    if variant not in CONDITIONAL_VARIANTS:
        raise ValueError(
            f"rescale_prob applies only to variant 'lazy' or 'skip_scale', got variant {variant!r}"
        )
    if (
        isinstance(rescale_prob, bool)
        or not isinstance(rescale_prob, int | float)
        or not (0.0 <= rescale_prob <= 1.0)
    ):
        raise ValueError(f"rescale_prob must be a number in [0, 1], got {rescale_prob!r}")
    return dataclasses.replace(cost, probability=float(rescale_prob))
