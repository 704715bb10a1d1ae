"""The bit-exact FlashAttention emulator: one entry point, every rescaling variant.

``attention(q, k, v, variant)`` runs the online-softmax recurrence block by block, exactly
as the precision policy (:mod:`amla_numerics.flash.policy`) prescribes, vectorised over
rows, heads and batch (loops run over KV blocks only, plus the accumulation order where a
matrix-unit model needs it). The stage definitions are in ``docs/numerics.md``; in short,
per KV block ``j`` (0-based) and row, all in the work format (``fl`` = one rne rounding):

1. ``S_j = fl(QK_j * scale)`` with ``QK_j`` the matrix-unit product (policy ``qk``) and
   ``scale`` rounded to the work format; with an additive bias mask ``S_j = fl(S_j + b)``,
   ``b`` rounded (rne) to the work format; masked scores are ``-inf``.
2. ``m_j = max(m_{j-1}, rowmax S_j)`` (exact; ``m_{-1} = -inf``).
3. ``P_j = exp(fl(S_j - m_j))`` (correctly rounded, or the polynomial model), using
   ``m_j := 0`` on rows with no unmasked score yet (so their P is 0).
4. ``a_j = exp(fl(m_{j-1} - m_j))`` (0 if ``m_{j-1} = -inf``),
   ``l_j = fl(fl(a_j l_{j-1}) + rowsum P_j)``
   (rowsum in the policy's order; ``l_0 = rowsum P_0``).
5. ``PV_j`` = matrix-unit product (policy ``pv``) of ``cast(P_j)`` (or AMLA's
   ``cast(fl(P_j r^_j))``) with ``V_j``.
6. O: block 0 stores ``PV_0``; then ``fa_fp32``: ``O = fl(fl(a_j O) + PV_j)``; ``fa_bf16``:
   the same, cast to BF16 (policy ``o_lowp``); AMLA variants: :mod:`~amla_numerics.flash.amla`
   rescale, then ``O = fl(O + PV_j)``; ``lazy``: see below.
   With a static P scale or an FP8 P cast, step 5 is :mod:`~amla_numerics.flash.fp8`'s
   stage (``cast(fl(P_j S))``, product, ``fl(PV_j / S)``); variants ``fa_fp8`` (as
   ``fa_fp32``) and ``amla_fp8`` (as ``amla``) run under its :func:`variant_policy`.
   Policy ``kv_order="reverse"`` visits the blocks last to first (trace in visit order).
7. ``out = fl(O / l)`` (AMLA: ``fl(O / fl(l r^_N))``), after the optional ``o_clip``
   (a finite O beyond it, zeroed, is the counted hazard :data:`CLIP_HAZARD`).
   ``lse = m + ln(l)`` in float64 from the final work-format ``m`` and ``l``.

``fa4`` (FlashAttention-4's softmax): raw scores, ``exp2`` of one FMA by a polynomial, the
lazy rescale in log2 units (:mod:`~amla_numerics.flash.fa4`); its trace's ``m`` is raw.
``naive`` is the same with a single block holding all keys. ``lazy`` (FlashAttention-4):
the running max ``m`` is stale; at block ``j >= 1`` with ``m' = max(m, rowmax S_j)`` the row
rescales (``a = exp(fl(m - m'))``, ``O = fl(a O)``, ``l = fl(a l)``, ``m = m'``) only if
``fl(fl(m' - m) * LOG2E) > tau``; otherwise P is taken against the stale ``m`` (values up to
``2**tau``). Then ``l = fl(l + rowsum P)``, ``O = fl(O + PV)``, ``out = fl(O / l)``.
``skip_scale`` (DeepSeek's Ascend skip-scale): as ``lazy`` with ``tau`` in nats, the test
``fl(m' - m) > tau`` (no LOG2E), so P reaches ``e**tau`` before its cast.

Fully masked rows (every score ``-inf``): ``l = 0`` and O = 0, so ``out`` is NaN (0/0) and
``lse = -inf`` for the FA variants; AMLA's integer add on their zero O is a counted
``zero`` hazard whose garbage makes ``out`` NaN or +-inf (``amla_guarded`` keeps O = 0: NaN).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> q, k = rng.standard_normal((3, 8)), rng.standard_normal((40, 8))
>>> v = rng.standard_normal((40, 4))
>>> res = attention(q, k, v, "amla", block_n=16, trace=True)
>>> res.out.dtype, res.out.shape, res.trace.m.shape, res.hazards["zero"]
(dtype('float32'), (3, 4), (3, 3), 0)
>>> exact = attention(q, k, v, "amla", block_n=16, policy="exact")
>>> bool(np.max(np.abs(res.out - exact.out)) < 1e-2)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from amla_numerics.exp2add import HAZARDS
from amla_numerics.flash._exactsum import (
    _LONG,
    _min_quantum_exp_fast,
    min_nonzero_abs,
    quantum_exp_from_min,
)
from amla_numerics.flash.accumulate import vector_sum
from amla_numerics.flash.amla import AmlaScalars, amla_rescale, amla_scalars, clamped_rows
from amla_numerics.flash.checks import (
    Inputs,
    block_bounds,
    check_fits,
    check_inputs,
    check_scale,
)
from amla_numerics.flash.fa4 import fa4_block, softmax_scale_log2
from amla_numerics.flash.fp8 import FP8_FORMATS, p_cast_stage, remove_p_scale, variant_policy
from amla_numerics.flash.fp8kv import kv_fp8_roundtrip
from amla_numerics.flash.policy import Policy, get_policy
from amla_numerics.flash.splitkv import SplitTrace, check_combine, run_splits, split_ranges
from amla_numerics.flash.stages import (
    PRECISION,
    cast,
    constants,
    exp_cr,
    exp_poly,
    matrix_product,
    product_saturated,
    round_input,
)
from amla_numerics.flash.trace import Trace, rescale_probability
from amla_numerics.inputs import is_leading_columns
from amla_numerics.variants import DEFAULT_C, check_variant, default_tau, spec

__all__ = [
    "CLIP_HAZARD",
    "MLA_DK",
    "MLA_DV",
    "MLA_SCALE",
    "RANGE_HAZARD",
    "FlashResult",
    "Trace",
    "attention",
    "mla_attention",
    "rescale_probability",
]

#: The hazard class of a clipping policy (``Policy.o_clip``, preset ``"cann"``): output
#: elements whose final O was finite, beyond ``o_clip`` and zeroed (counted per element,
#: in :meth:`FlashResult.garbage_mask`: no bound covers a value the policy replaced by 0;
#: the key is present only under a clipping policy).
CLIP_HAZARD = "o_clip"

#: The hazard class of scores beyond the work format's softmax: output elements of rows
#: with an attended key that are not finite although no integer-add garbage or FP32
#: overflow of O, l or the division explains them (a product ``QK^T`` or its scaling
#: beyond FP32, or, for ``fa4``, scores so large that the rounding of ``fl(m c)`` exceeds
#: the exp's range and every probability underflows). Counted per element, in
#: :meth:`FlashResult.garbage_mask`; the key is present only where it occurred.
RANGE_HAZARD = "score_range"

#: The MLA decode preset (DeepSeek-V3 absorbed form): score dim, value dim, softmax scale.
MLA_DK, MLA_DV, MLA_SCALE = 576, 512, 1.0 / math.sqrt(192.0)


@dataclass(frozen=True)
class FlashResult:
    """The emulator's output.

    Attributes
    ----------
    out : numpy.ndarray
        (..., M, Dv) in the work dtype (float32 under ``"ascend"``, float64 under ``"exact"``).
    lse : numpy.ndarray
        (..., M) float64 log-sum-exp of the scaled scores, ``m + ln(l)``.
    hazards : dict[str, int]
        Every class of :data:`amla_numerics.exp2add.HAZARDS` -> number of elements of O
        that hit it, summed over all integer adds, plus ``"clamp"``: elements of O in rows
        whose ``dn`` the kernel's clamp raised, summed over blocks (informational: a
        deterministic feature the bounds cover). ``"overflow"`` also counts, for every
        variant, the output elements of attended rows that are not finite because O, l or
        the division overflowed FP32 (and no integer-add hazard touched them). Under a
        clipping policy, :data:`CLIP_HAZARD`: elements whose finite O the clip zeroed.
        Where it occurred, :data:`RANGE_HAZARD`: non-finite elements of rows with an
        attended key that no other class explains.
    hazard_mask : dict[str, numpy.ndarray]
        Per class of ``hazards`` (``"ok"`` excluded), a bool array shaped like ``out``:
        which output elements that class touched over all blocks (``"clamp"``: whole rows).
    uncovered : numpy.ndarray or None
        The elements of :meth:`garbage_mask` (None: none).
    trace : Trace or None
        Per-block state when ``trace=True`` (unsplit runs; a split run keeps each split's
        in ``splits.traces``).
    config : dict
        Variant, policy, block size and options: JSON-serialisable.
    splits : SplitTrace or None
        A split-KV run's per-split partials (:mod:`~amla_numerics.flash.splitkv`); None
        when the run was not split.
    """

    out: np.ndarray
    lse: np.ndarray
    hazards: dict[str, int]
    trace: Trace | None
    config: dict[str, Any]
    hazard_mask: dict[str, np.ndarray] = field(default_factory=dict)
    uncovered: np.ndarray | None = None
    splits: SplitTrace | None = None

    def garbage_mask(self) -> np.ndarray:
        """Output elements whose value came from the integer add's garbage: those a garbage
        class touched (``amla_guarded`` repairs them: none there), less those that had
        overflowed FP32 first and stayed non-finite. No error bound covers them; every
        other element with a finite reference is covered, so FP32 overflow (finite
        reference, non-finite output) is a failure, not an exemption. An O that overflowed
        and that a later integer add turned finite again (the add of ``dn`` to inf's
        exponent field: class ``nonfinite``) holds the add's garbage: it is in the mask,
        and stays counted as ``overflow``. ``clamp`` is not garbage: the bounds cover it.
        Under a clipping policy the elements :data:`CLIP_HAZARD` zeroed are garbage too,
        and so are the overflowed ones it zeroed (counted as ``overflow``) and those of
        :data:`RANGE_HAZARD`. So are outputs whose P V sum an RZ accumulator saturated
        (counted as ``overflow``: the value looks finite)."""
        if self.uncovered is not None:
            return self.uncovered
        return np.zeros(self.out.shape, bool)


def attention(
    q: Any,
    k: Any,
    v: Any,
    variant: str = "amla",
    *,
    scale: float | None = None,
    block_n: int = 512,
    policy: Policy | str | dict | None = None,
    trace: bool = False,
    c: float = DEFAULT_C,
    tau: float | None = None,
    mask: Any = None,
    causal: bool = False,
    splits: int | Sequence[tuple[int, int]] | None = None,
    combine: str = "cann",
) -> FlashResult:
    """Emulate FlashAttention with rescaling scheme ``variant``, bit for bit under ``policy``.

    Parameters
    ----------
    q, k, v : array_like
        (..., M, Dk), (..., N, Dk), (..., N, Dv); leading dimensions broadcast. Any real
        dtype (bfloat16 included); values are rounded to the policy's matrix-unit input
        format (rne). NaN/inf inputs are refused.
    variant : str
        One of :data:`amla_numerics.variants.VARIANTS`.
    scale : float, optional
        Softmax scale (default ``1/sqrt(Dk)``), rounded to the work format.
    block_n : int
        KV block length; ``N`` need not be a multiple.
    policy : Policy, preset name or dict, optional
        Default ``"ascend"``.
    trace : bool
        Record the per-block :class:`Trace`.
    c : float
        AMLA's compensation coefficient (rounded to the work format).
    tau : float, optional
        The stale-max threshold: ``lazy``'s in log2 units (default 8), ``skip_scale``'s in
        nats (default 6) (:func:`~amla_numerics.variants.default_tau`).
    mask : array_like of bool or float, optional
        Broadcastable to (..., M, N), with the meaning of :mod:`amla_numerics.inputs`: a
        boolean keep-mask (True attends), or an additive float bias (finite, or -inf to mask).
    causal : bool
        Row ``i`` attends keys ``j <= i + N - M`` (bottom-right aligned).
    splits : int or sequence of (lo, hi), optional
        Split-KV (flash-decoding): ``S`` splits of whole KV blocks, or explicit key ranges
        partitioning ``[0, N)`` in order (empty ranges allowed); each split is run as an
        unsplit call on its keys and the partials are merged by ``combine``
        (:mod:`~amla_numerics.flash.splitkv`). None or a single split: the unsplit run,
        bit for bit.
    combine : {"cann", "flashmla"}
        The combine kernel modelled (:data:`~amla_numerics.flash.splitkv.COMBINES`).

    Returns
    -------
    FlashResult

    Raises
    ------
    ValueError
        Unknown variant (the message lists the valid ones), mismatched shapes,
        ``block_n < 1``, NaN inputs, bad mask or option values, a scale outside the work
        format's normal range (``fa4``: also ``scale * log2 e``; a negative scale), inputs
        that overflow the matrix unit's input format (FP16 beyond 65504).
    TypeError
        Arguments of the wrong type.
    """
    variant = check_variant(variant)
    if tau is None:
        tau = default_tau(variant)
    pol = variant_policy(get_policy(policy), variant)
    if not isinstance(trace, (bool, np.bool_)):
        raise TypeError(f"argument 'trace' must be a bool, got {type(trace).__name__}")
    inp = check_inputs(
        q, k, v, scale=scale, block_n=block_n, mask=mask, causal=causal, c=c, tau=tau
    )
    check_scale(inp.scale, pol.work, variant)
    combine = check_combine(combine)
    ranges = split_ranges(inp.n, splits, int(block_n))
    reverse = pol.kv_order == "reverse"
    run = _Run(inp, pol, variant, float(c), float(tau), bool(trace))
    split_trace = None
    if len(ranges) == 1:
        blocks = block_bounds(inp.n, int(block_n)) if spec(variant).tiled else [(0, inp.n)]
        if reverse:
            blocks = blocks[::-1]
        out, lse, hazards, masks, uncovered, tr = run.execute(blocks)
        n_blocks = len(blocks)
    else:
        plan = [_split_blocks(lo, hi, variant, int(block_n)) for lo, hi in ranges]
        if reverse:  # each split visits its own blocks last to first
            plan = [p[::-1] for p in plan]
        out, lse, hazards, masks, uncovered, split_trace = run_splits(run, ranges, plan, combine)
        tr = None
        n_blocks = sum(len(b) for b in plan)
    config = {
        "variant": variant,
        "policy": pol.to_dict(),
        "block_n": int(block_n),
        "n_blocks": n_blocks,
        "scale": inp.scale,
        "c": float(c),
        "tau": float(tau),
        "causal": bool(causal),
        "masked": mask is not None,
        "shapes": {"q": list(np.shape(q)), "k": list(np.shape(k)), "v": list(np.shape(v))},
    }
    if split_trace is not None:
        config["splits"] = [list(r) for r in ranges]
        config["combine"] = combine
    return FlashResult(out, lse, hazards, tr, config, masks, uncovered, split_trace)


def _split_blocks(lo: int, hi: int, variant: str, block_n: int) -> list[tuple[int, int]]:
    """The KV blocks of the split ``[lo, hi)``: restarted at ``lo`` (one for ``naive``)."""
    if hi == lo:
        return []
    if not spec(variant).tiled:
        return [(lo, hi)]
    return [(lo + a, lo + b) for a, b in block_bounds(hi - lo, block_n)]


def mla_attention(
    q: Any, kv: Any, variant: str = "amla", *, kv_cache: str = "bf16", **options: Any
) -> FlashResult:
    """MLA decode preset: ``v = kv[..., :512]``, scale ``1/sqrt(192)`` unless given.

    ``q`` is (..., M, 576) and ``kv`` (..., N, 576) (the latent cache: 512 latent + 64 rope
    columns); ``kv_cache="fp8"`` stores it in FlashMLA's 656-byte FP8 cache first and runs
    on the dequantised values (:mod:`~amla_numerics.flash.fp8kv`; ``"bf16"``: as given);
    the other options go to :func:`attention`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> r = mla_attention(rng.standard_normal((2, 576)), rng.standard_normal((3, 576)), "fa_fp32")
    >>> r.out.shape, r.config["scale"] == MLA_SCALE
    ((2, 512), True)
    """
    kv = np.asarray(kv)
    if kv.ndim < 2 or kv.shape[-1] != MLA_DK:
        raise ValueError(f"argument 'kv' must have shape (..., N, {MLA_DK}), got {kv.shape}")
    if kv_cache not in ("bf16", "fp8"):
        raise ValueError(f"argument 'kv_cache' must be 'bf16' or 'fp8', got {kv_cache!r}")
    if kv_cache == "fp8":
        kv = kv_fp8_roundtrip(kv)
    options.setdefault("scale", MLA_SCALE)
    return attention(q, kv, kv[..., :MLA_DV], variant, **options)


def _min_nonzero_abs_bf16(k: np.ndarray, axis: int = -1) -> np.ndarray | None:
    """Smallest non-zero |k| along ``axis`` of a bfloat16 array, from its bits (else None)."""
    if k.dtype != ml_dtypes.bfloat16:
        return None
    if k.shape[axis] == 0:
        return np.full(np.delete(k.shape, axis), np.inf)
    low = k.view(np.uint16) & np.uint16(0x7FFF)
    low -= np.uint16(1)  # zeros wrap to 0xFFFF, above every finite magnitude - 1
    low = low.min(axis=axis)
    low += np.uint16(1)  # all-zero lines wrap back to 0
    low[low == 0] = 0x7F80  # +inf
    return (low.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


_QK_ALL = 1 << 22  # score elements computed in one product (float64: 32 MB)


def _absmax(x: np.ndarray, raw: np.ndarray | None = None) -> float:
    """``max |x|`` of a float64 array (0 when empty); from the bits of ``raw`` (the same
    values) when that is a bfloat16 array."""
    if not x.size:
        return 0.0
    if raw is not None and raw.dtype == ml_dtypes.bfloat16:
        top = np.max(raw.view(np.uint16) & np.uint16(0x7FFF))
        return float(np.uint32(np.uint32(top) << np.uint32(16)).view(np.float32))
    return float(max(x.max(), -x.min()))


def _mark(masks: dict[str, np.ndarray], name: str, touched: np.ndarray) -> None:
    """OR ``touched`` into the mask of class ``name`` (created on first use)."""
    if name in masks:
        masks[name] = masks[name] | touched
    else:
        masks[name] = np.array(touched, dtype=bool)


#: KV blocks as ``(lo, hi)`` key ranges, in visit order.
Blocks = Sequence[tuple[int, int]]

#: What one run over its KV blocks gives: ``out``, ``lse``, the hazard counts, the per-class
#: element masks, the uncovered (garbage) elements and the trace (None unless asked for).
RunOutput = tuple[
    np.ndarray, np.ndarray, dict[str, int], dict[str, np.ndarray], np.ndarray, Trace | None
]

_TRACE_KEYS = (
    "m",
    "n",
    "r_hat",
    "cof",
    "eps",
    "dn",
    "N",
    "rescaled",
    "p_underflow",
    "p_saturate",
)


@dataclass
class _State:
    """The recurrence's running values over the KV blocks, and what the blocks hit."""

    m: np.ndarray | None = None  # the running max (None before block 0)
    l: np.ndarray | None = None  # the row sum
    O: np.ndarray | None = None  # the output accumulator
    sc: AmlaScalars | None = None  # AMLA: the last block's scalars
    hazards: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*HAZARDS, "clamp"), 0))
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    # AMLA: elements the integer add's garbage touched, and elements that overflowed in
    # FP32 (O + PV, the guard's multiply) before any garbage reached them
    garbage: np.ndarray | None = None
    fp32_over: np.ndarray | None = None
    saturated: np.ndarray | None = None  # P V sums an RZ accumulator saturated
    score_rows: np.ndarray | None = None  # rows with a non-finite attended score
    rec: dict[str, list[Any]] = field(default_factory=lambda: {key: [] for key in _TRACE_KEYS})


class _Run:
    """One emulation: the operands and constants of the recurrence over the KV blocks."""

    def __init__(
        self, inp: Inputs, pol: Policy, variant: str, c: float, tau: float, trace: bool
    ) -> None:
        self.inp, self.pol, self.variant, self.c, self.tau = inp, pol, variant, c, tau
        self.want_trace = trace
        self.dt = np.float32 if pol.work == "fp32" else np.float64
        self.exp = exp_cr if pol.exp == "cr" else exp_poly
        self.log2e = constants(pol)["LOG2E"]
        self.spec = spec(variant)
        self.is_amla = self.spec.is_amla
        self._round_operands()
        self._softmax_constants()
        self.k_absmax: float | None = None
        self.v_absmax: float | None = None
        self.q_stats: tuple[np.ndarray, np.ndarray] | None = None
        self.k_stats: tuple[np.ndarray, np.ndarray] | None = None
        self.v_parts: int | None = None
        self.v_small: dict[int, np.ndarray] | None = None
        self.qk_all: np.ndarray | None = None
        p_qk, p_pv = PRECISION.get(pol.qk.in_format), PRECISION.get(pol.pv.in_format)
        if pol.qk.accumulation.model == "exact" and p_qk is not None:
            self._qk_statistics(p_qk)
        if pol.pv.accumulation.model == "exact" and p_pv is not None:
            self.v_parts = p_pv
            # one bound of max |V| for every block's rounding certificate (V = K[..., :Dv]:
            # K's, when the QK product's certificate has it)
            self.v_absmax = (
                self.k_absmax
                if self.v_is_k and self.k_absmax is not None
                else _absmax(self.v, inp.v if pol.pv.in_format == "bf16" else None)
            )

    def _round_operands(self) -> None:
        """Q, K^T and V rounded (rne) to the matrix unit's input formats, once."""
        inp, pol = self.inp, self.pol
        self.q = round_input(inp.q, pol.qk.in_format)
        check_fits(inp.q, self.q, "q", pol.qk.in_format)
        self.kT = np.swapaxes(round_input(inp.k, pol.qk.in_format), -1, -2)
        check_fits(inp.k, self.kT, "k", pol.qk.in_format)
        self.v_is_k = is_leading_columns(inp.v, inp.k) and pol.pv.in_format == pol.qk.in_format
        if self.v_is_k:
            self.v = np.swapaxes(self.kT, -1, -2)[..., : inp.dv]  # MLA: V is K[..., :Dv]
        else:
            self.v = round_input(inp.v, pol.pv.in_format)
            check_fits(inp.v, self.v, "v", pol.pv.in_format)

    def _softmax_constants(self) -> None:
        """The scale and the bias in the work format; ``fa4``'s exp2 coefficient."""
        inp = self.inp
        self.scale = self.dt(inp.scale)
        # an additive score bias, rounded (rne) to the work format once
        self.bias: np.ndarray | None = None if inp.bias is None else inp.bias.astype(self.dt)
        # fa4: raw scores with the scale folded into the exp2's FMA; with a bias (FA4's
        # score_mod path) the scores are scaled and biased first and c = log2 e
        fa4 = self.spec.softmax == "fa4"
        self.fa4_raw = fa4 and self.bias is None
        if self.fa4_raw:
            self.scale, self.c_log2 = self.dt(1), softmax_scale_log2(inp.scale, self.dt)
        elif fa4:
            self.c_log2 = softmax_scale_log2(1.0, self.dt)

    def _qk_statistics(self, p_qk: int) -> None:
        """Row statistics of Q and column statistics of K^T for the exact accumulation
        model's certificate (norms, quantum exponents, ``max |K|``), computed once."""
        inp = self.inp
        k_rows = np.swapaxes(self.kT, -1, -2)  # contiguous (..., N, Dk): column stats of K^T
        small = None
        if (
            self.pol.qk.in_format == "bf16"
            and inp.k.dtype == ml_dtypes.bfloat16
            and inp.k.shape[-1]
        ):
            mag = inp.k.view(np.uint16) & np.uint16(0x7FFF)
            top = mag.max()  # max |K| from the same pass
            self.k_absmax = float(np.uint32(np.uint32(top) << np.uint32(16)).view(np.float32))
            mag -= np.uint16(1)  # zeros wrap to 0xFFFF
            low = mag.min(axis=-1)
            low += np.uint16(1)
            low[low == 0] = 0x7F80  # +inf: all-zero rows
            small = (low.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        if small is None:
            small = min_nonzero_abs(k_rows, -1)
        self.k_stats = (
            np.sqrt(np.einsum("...nk,...nk->...n", k_rows, k_rows)),
            quantum_exp_from_min(small, p_qk),
        )
        if self.k_absmax is None:
            self.k_absmax = _absmax(self.kT)
        self.q_stats = (
            np.sqrt(np.einsum("...mk,...mk->...m", self.q, self.q)),
            _min_quantum_exp_fast(self.q, p_qk),
        )

    def _all_scores(self, blocks: Blocks) -> None:
        """Every block's ``QK`` in one product when it is exact (a wider BLAS call, the same
        values: each element is the exact sum rounded once, whatever the blocking)."""
        self.qk_all = None
        mm = self.pol.qk
        size = self.q.shape[-2] * self.inp.n * max(1, int(np.prod(self.inp.batch, dtype=np.int64)))
        if (
            len(blocks) > 1
            and self.k_stats is not None
            and mm.out_format == "fp32"
            and size <= _QK_ALL
        ):
            self.qk_all = matrix_product(
                self.q,
                self.kT,
                mm,
                self.dt,
                a_rounded=True,
                b_rounded=True,
                b_stats=self.k_stats,
                b_absmax=self.k_absmax,
                a_stats=self.q_stats,
            )

    def _scores(self, lo: int, hi: int) -> np.ndarray:
        """Stage 1 for keys ``lo:hi``: ``fl(QK * scale)`` (+ the bias), masked scores -inf."""
        if self.qk_all is not None:
            qk = self.qk_all[..., lo:hi]
        else:
            stats = (
                None
                if self.k_stats is None
                else (self.k_stats[0][..., lo:hi], self.k_stats[1][..., lo:hi])
            )
            qk = matrix_product(
                self.q,
                self.kT[..., lo:hi],
                self.pol.qk,
                self.dt,
                a_rounded=True,
                b_rounded=True,
                b_stats=stats,
                b_absmax=self.k_absmax,
                a_stats=self.q_stats,
            )
        with np.errstate(over="ignore", invalid="ignore"):
            s: np.ndarray = qk * self.scale
            if self.bias is not None:
                s = s + self.bias[..., lo:hi]
        if self.inp.keep is not None:
            s = np.where(self.inp.keep[..., lo:hi], s, self.dt(-np.inf))
        return s

    def _pv(self, p: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Stage 5 for keys ``lo:hi``: the P cast (:func:`~amla_numerics.flash.fp8.p_cast_stage`,
        its counts left in ``p_counts``), the matrix-unit product with V, the P scale removed."""
        staged = p_cast_stage(p, self.pol)
        self.p_counts = (staged.underflow, staged.saturate)
        pc = staged.values
        stats = None
        if self.v_parts is not None and self.pol.pv.in_format == "bf16":
            # exactness test of the P V tile: V's column quanta in this block, and a bound of
            # its column norms (sqrt(rows) max |V|)
            small = self.v_small.get(lo) if self.v_small is not None else None
            if small is not None and self.v_absmax is not None:
                nb = np.full(small.shape, math.sqrt(hi - lo) * self.v_absmax * (1 + 2.0**-30))
                stats = (nb, quantum_exp_from_min(small, self.v_parts))
        exact_in = self.pol.p_cast is not None and (
            self.pol.p_cast == self.pol.pv.in_format
            or self.pol.p_cast in FP8_FORMATS  # FP8 values fit every in_format
        )
        if exact_in:  # the cast already put P in the matrix unit's input format
            pc = pc.astype(np.float64)
        v = self.v[..., lo:hi, :]
        sat = product_saturated(pc, v, self.pol.pv, a_rounded=exact_in, b_rounded=True)
        self.pv_saturated = sat if sat.any() else None  # an RZ accumulator's hidden overflow
        return remove_p_scale(
            matrix_product(
                pc,
                v,
                self.pol.pv,
                self.dt,
                a_rounded=exact_in,
                b_rounded=True,
                b_stats=stats,
                b_absmax=self.v_absmax,
            ),
            self.pol,
        )

    def _block_small(self, blocks: Blocks) -> dict[int, np.ndarray] | None:
        """Per KV block: the smallest non-zero |V| of each column (BF16 V only), one pass."""
        v = self.inp.v
        if self.v_parts is None or self.pol.pv.in_format != "bf16" or v.dtype != ml_dtypes.bfloat16:
            return None
        if len(blocks) == 1 and blocks[0][1] - blocks[0][0] > _LONG:
            return None  # one long P V (naive): its exact model uses no column statistics
        low = v.view(np.uint16) & np.uint16(0x7FFF)
        low -= np.uint16(1)  # zeros wrap to 0xFFFF
        size = blocks[0][1] - blocks[0][0]
        if (
            all(lo == j * size for j, (lo, _) in enumerate(blocks))
            and blocks[-1][1] - blocks[-1][0] <= size
        ):
            # equal blocks (the last one may be short): a reshaped min, faster than reduceat
            full = (low.shape[-2] // size) * size
            parts = [
                np.minimum.reduce(
                    low[..., :full, :].reshape(*low.shape[:-2], full // size, size, low.shape[-1]),
                    axis=-2,
                )
            ]
            if full < low.shape[-2]:
                parts.append(np.minimum.reduce(low[..., full:, :], axis=-2, keepdims=True))
            low = np.concatenate(parts, axis=-2) if len(parts) > 1 else parts[0]
        else:
            low = np.minimum.reduceat(low, [lo for lo, _ in blocks], axis=-2)
        low += np.uint16(1)
        low[low == 0] = 0x7F80  # +inf: all-zero columns
        small = (low.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return {lo: small[..., j, :] for j, (lo, _) in enumerate(blocks)}

    def prepare(self, blocks: Blocks) -> None:
        """Column statistics and (when exact) every score, for all ``blocks`` at once."""
        self.v_small = self._block_small(sorted(blocks))  # any visit order
        self._all_scores(blocks)

    def execute(self, blocks: Blocks, *, prepared: bool = False) -> RunOutput:
        """Run the recurrence over ``blocks`` (block 0 = the first listed): stages 1-6 of
        each block (:meth:`_block`), then stage 7 and the output's hazard classes
        (:meth:`_finish`). The final W-format ``m``, ``l`` and AMLA scalars are left in
        ``final_m``, ``final_l``, ``final_sc``."""
        if not prepared:
            self.prepare(blocks)
        st = _State()
        for j, (lo, hi) in enumerate(blocks):
            self._block(st, j, lo, hi)
        return self._finish(st)

    def _block(self, st: _State, j: int, lo: int, hi: int) -> None:
        """Stages 1-6 for KV block ``j`` (keys ``lo:hi``), updating ``st``."""
        s = self._scores(lo, hi)  # 1
        self._note_score_range(st, s, lo, hi)
        m_new, resc, p, a = self._softmax(s, st.m)  # 2-4: max, P, a
        st.l = self._row_sum(p, st.l, resc, a)  # 4: l
        if self.is_amla:
            self._amla_accumulate(st, p, m_new, lo, hi)  # 5-6
        else:
            self._fa_accumulate(st, p, resc, a, lo, hi)  # 5-6
        if self.pv_saturated is not None and st.O is not None:  # O may look finite
            sat = np.broadcast_to(self.pv_saturated, st.O.shape)
            st.saturated = sat if st.saturated is None else st.saturated | sat
        st.m = m_new
        if self.want_trace:
            self._record(st.rec, m_new, st.sc if self.is_amla else None, resc, j)
            st.rec["p_underflow"].append(self.p_counts[0])
            st.rec["p_saturate"].append(self.p_counts[1])

    def _note_score_range(self, st: _State, s: np.ndarray, lo: int, hi: int) -> None:
        """Rows with an attended score beyond the work format (:data:`RANGE_HAZARD`)."""
        with np.errstate(invalid="ignore"):
            if not np.isfinite(s).all():
                bad = self._score_overflow(s, lo, hi)
                if bad is not None:
                    st.score_rows = bad if st.score_rows is None else st.score_rows | bad

    def _softmax(
        self, s: np.ndarray, m: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Stages 2-4 of a block: ``(m_new, rescaled, P, a)`` against the running max ``m``
        (None at block 0): :meth:`_softmax_step`, or ``fa4``'s raw scores and log2-domain
        softmax (:func:`~amla_numerics.flash.fa4.fa4_block`)."""
        with np.errstate(invalid="ignore", over="ignore"):
            if self.spec.softmax == "fa4":
                exact = self.dt != np.float32
                return fa4_block(s, m, self.c_log2, self.dt(self.tau), exact=exact)
            return self._softmax_step(s, m)

    def _row_sum(
        self, p: np.ndarray, l: np.ndarray | None, resc: np.ndarray, a: np.ndarray | None
    ) -> np.ndarray:
        """Stage 4: ``l_0 = rowsum P_0``, then ``l_j = fl(fl(a_j l_{j-1}) + rowsum P_j)``
        (rowsum in the policy's order; a stale-max row that keeps its max keeps ``l``)."""
        with np.errstate(invalid="ignore", over="ignore"):
            rs = vector_sum(p, self.pol.rowsum)
            if l is None or a is None:
                return rs
            return np.where(resc, a * l, l) + rs

    def _amla_accumulate(
        self, st: _State, p: np.ndarray, m_new: np.ndarray, lo: int, hi: int
    ) -> None:
        """Stages 5-6 of the AMLA variants: the block's scalars (:mod:`~.amla`), ``PV_j``
        of ``cast(fl(P_j r^_j))``; block 0 stores it, later blocks rescale O by the integer
        add (hazards counted, :meth:`_count_rescale`) and then ``O = fl(O + PV_j)``."""
        prev = st.sc
        st.sc = sc = amla_scalars(
            m_new,
            None if prev is None else prev.n,
            None if prev is None else prev.cof,
            self.pol,
            self.variant,
            self.c,
        )
        with np.errstate(over="ignore"):
            pv = self._pv(p * sc.r_hat[..., None], lo, hi)
        if st.O is None:
            O = pv
        else:
            O, counts, codes = amla_rescale(st.O, sc, self.pol, self.variant)
            self._count_rescale(st, sc, counts, codes, O.shape)
            with np.errstate(invalid="ignore", over="ignore"):
                O = O + pv
        if not np.isfinite(O).all():
            new = ~np.isfinite(O) if st.garbage is None else ~np.isfinite(O) & ~st.garbage
            st.fp32_over = new if st.fp32_over is None else st.fp32_over | new
        st.O = O

    def _count_rescale(
        self,
        st: _State,
        sc: AmlaScalars,
        counts: dict[str, int],
        codes: np.ndarray | None,
        shape: tuple[int, ...],
    ) -> None:
        """Count the integer add's hazard classes (elements per class; garbage unless the
        variant's guard repairs it) and the elements of the rows the ``dn`` clamp raised."""
        for key, val in counts.items():
            st.hazards[key] += val
        if codes is not None:
            for code, name in enumerate(HAZARDS):
                if code and counts[name]:
                    _mark(st.masks, name, codes == code)
            if not self.spec.guard:
                st.garbage = codes != 0 if st.garbage is None else st.garbage | (codes != 0)
        clamped = clamped_rows(sc, self.pol)
        if clamped is not None:
            st.hazards["clamp"] += int(np.count_nonzero(clamped)) * shape[-1]
            _mark(st.masks, "clamp", np.broadcast_to(clamped[..., None], shape))

    def _fa_accumulate(
        self,
        st: _State,
        p: np.ndarray,
        resc: np.ndarray,
        a: np.ndarray | None,
        lo: int,
        hi: int,
    ) -> None:
        """Stages 5-6 of the FA variants: ``PV_j`` of ``cast(P_j)``; block 0 stores it, then
        ``O = fl(fl(a_j O) + PV_j)`` (a stale-max row that keeps its max: ``fl(O + PV_j)``);
        BF16 O storage (``fa_bf16``) casts O to the policy's ``o_lowp``."""
        pv = self._pv(p, lo, hi)
        with np.errstate(invalid="ignore", over="ignore"):
            if st.O is None or a is None:
                O = pv
            else:
                O = np.where(resc[..., None], a[..., None] * st.O, st.O) + pv
        if self.spec.o_storage == "bf16":
            O = cast(O, self.pol.o_lowp, self.pol.o_lowp_rounding)
        st.O = O

    def _finish(self, st: _State) -> RunOutput:
        """Stage 7 (the clip, the division, the lse) and the output's hazard classes."""
        if st.O is None or st.l is None or st.m is None:
            raise ValueError("an emulator run needs at least one KV block")
        O, zeroed = self._clip(st.O)
        out, lse = self._divide(O, st.l, st.m, st.sc)
        junk, overflow = self._out_of_range(st, st.O, st.l, out)
        if zeroed is not None:  # O the clip zeroed: a policy-made wrong value
            zeroed = np.broadcast_to(zeroed, out.shape)
            junk = junk | (zeroed & overflow)  # an overflowed O's 0: counted as overflow
            clipped = zeroed & np.broadcast_to(np.isfinite(st.O), out.shape) & ~junk & ~overflow
            st.hazards[CLIP_HAZARD] = int(np.count_nonzero(clipped))
            if st.hazards[CLIP_HAZARD]:
                _mark(st.masks, CLIP_HAZARD, clipped)
                junk = junk | clipped
        full = {
            name: np.broadcast_to(st.masks[name], out.shape).copy()
            if name in st.masks
            else np.zeros(out.shape, bool)
            for name in st.hazards
            if name != "ok"
        }
        tr = self._trace(st.rec) if self.want_trace else None
        # fa4's raw max in score units (nats) for a split combine: fl(m * scale)
        self.final_m = st.m * self.dt(self.inp.scale) if self.fa4_raw else st.m
        self.final_l, self.final_sc = st.l, st.sc
        # an overflowed element stays judged (its non-finite output fails the bound check)
        # unless a later integer add turned its inf into a finite value: that value is the
        # integer add's garbage (class nonfinite), which no bound covers
        with np.errstate(invalid="ignore"):
            judged = overflow & ~np.isfinite(out)
        return out, lse, st.hazards, full, junk & ~judged, tr

    def _clip(self, O: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The policy's optional ``o_clip`` before the division: O zeroed beyond it or
        where not finite, and the elements it zeroed (None without a clip)."""
        if self.pol.o_clip is None:
            return O, None
        with np.errstate(invalid="ignore"):
            zeroed = ~(np.abs(O) <= self.dt(self.pol.o_clip))  # beyond the clip, inf or NaN
        return np.where(zeroed, self.dt(0), O), zeroed

    def _divide(
        self, O: np.ndarray, l: np.ndarray, m: np.ndarray, sc: AmlaScalars | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage 7: ``out = fl(O / l)`` (AMLA: ``fl(O / fl(l r^_N))``) and ``lse = m + ln(l)``
        in float64 from the final work-format ``m`` (``fa4``: raw, times the scale) and
        ``l``."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            den = l * sc.r_hat if sc is not None and self.is_amla else l
            out = O / den[..., None]
            m64 = m.astype(np.float64) * (self.inp.scale if self.fa4_raw else 1.0)
            lse = m64 + np.log(l.astype(np.float64))
        return out, lse

    def _out_of_range(
        self, st: _State, O: np.ndarray, l: np.ndarray, out: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Count and mark the outputs beyond the work format: FP32 overflow of O (before
        any clip), l or the division (class ``overflow``), and the non-finite outputs of
        rows with an attended key that nothing else explains, scores beyond the format
        included (:data:`RANGE_HAZARD`). Returns the garbage elements so far (integer-add
        garbage and :data:`RANGE_HAZARD`) and the overflow elements."""
        shape = out.shape
        junk = np.zeros(shape, bool) if st.garbage is None else np.broadcast_to(st.garbage, shape)
        overflow = self._fp32_overflow(O, l, out) & ~junk
        if st.fp32_over is not None:
            overflow |= np.broadcast_to(st.fp32_over, shape)
        if st.saturated is not None:  # counted overflow; no bound covers the saturated value
            sat = np.broadcast_to(st.saturated, shape)
            overflow |= sat & ~junk
            junk = junk | (sat & np.isfinite(out))
        # scores beyond the work format (rows with a non-finite attended score), then any
        # non-finite output of a row with a key that nothing else explains
        lost = np.zeros(shape, bool)
        if st.score_rows is not None:
            lost = np.broadcast_to(st.score_rows[..., None], shape).copy()
            overflow = overflow & ~lost
        if not np.isfinite(out).all():
            with np.errstate(invalid="ignore"):
                lost = lost | (~np.isfinite(out) & self._attended(shape) & ~junk & ~overflow)
        n_lost = int(np.count_nonzero(lost))
        if n_lost:
            st.hazards[RANGE_HAZARD] = n_lost
            _mark(st.masks, RANGE_HAZARD, lost)
            junk = junk | lost
        n_over = int(np.count_nonzero(overflow))
        if n_over:
            st.hazards["overflow"] += n_over
            _mark(st.masks, "overflow", overflow)
        return junk, overflow

    def _kept(self, lo: int, hi: int) -> np.ndarray | None:
        """Keys ``lo:hi`` the mask attends (kept, finite bias); None: all of them."""
        live = None if self.inp.keep is None else np.asarray(self.inp.keep[..., lo:hi], bool)
        if self.bias is not None:
            fin = np.isfinite(self.bias[..., lo:hi])
            live = fin if live is None else live & fin
        return live

    def _score_overflow(self, s: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
        """Rows (..., M) with an attended key whose work-format score is not finite (the
        product or its scaling beyond the format); None: none."""
        bad = ~np.isfinite(s)
        kept = self._kept(lo, hi)
        if kept is not None:
            bad = bad & kept
        rows = np.any(bad, axis=-1)
        return rows if rows.any() else None

    def _attended(self, shape: tuple[int, ...]) -> np.ndarray:
        """Output elements (``shape``) of rows with at least one attended key (kept by the
        mask, with a finite bias): the rows whose exact output is defined."""
        live = self._kept(0, self.inp.n)
        if live is None:
            return np.ones(shape, bool)
        return np.broadcast_to(np.any(live, axis=-1)[..., None], shape)

    @staticmethod
    def _fp32_overflow(O: np.ndarray, l: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Outputs of attended rows (``l > 0``) that are not finite because O (before any
        clip), l or the division overflowed FP32."""
        with np.errstate(invalid="ignore"):
            attended = np.broadcast_to((l > 0)[..., None], out.shape)
        return attended & (~np.isfinite(out) | ~np.isfinite(O) | ~np.isfinite(l)[..., None])

    def _softmax_step(
        self, s: np.ndarray, m: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Steps 2-4 (max, exp, rescale factor) for every variant but ``fa4``: ``m_j =
        max(m_{j-1}, rowmax S_j)`` (a stale max: kept unless it grows beyond ``tau``),
        ``P_j = exp(fl(S_j - m_j))`` with ``m_j := 0`` on rows with no unmasked score yet,
        ``a_j = exp(fl(m_{j-1} - m_j))`` (0 if ``m_{j-1} = -inf``; None at block 0)."""
        dt = self.dt
        mblk = s.max(axis=-1)
        if m is None:
            m_new, resc = mblk, np.zeros(mblk.shape, bool)
        else:
            cand = np.maximum(m, mblk)
            units = self.spec.stale_max  # fa4 runs flash/fa4.py instead
            if units is not None:  # lazy (log2) and skip_scale (nats): a stale max
                grow = cand - m  # -inf -> finite: inf; -inf -> -inf: nan
                if units == "log2":
                    grow = grow * self.log2e
                resc = grow > dt(self.tau)
                m_new = np.where(resc, cand, m)
            else:
                m_new, resc = cand, np.ones(cand.shape, bool)
        m_eff = np.where(np.isfinite(m_new), m_new, dt(0))
        p = self.exp(s - m_eff[..., None])
        a = None
        if m is not None:
            d = np.where(
                np.isneginf(m), np.where(np.isneginf(m_new), dt(0), dt(-np.inf)), m - m_new
            )
            a = self.exp(d)
        return m_new, resc, p, a

    @staticmethod
    def _record(
        rec: dict[str, list[Any]],
        m_new: np.ndarray,
        sc: AmlaScalars | None,
        resc: np.ndarray,
        j: int,
    ) -> None:
        """Append block ``j``'s max, rescale decision and AMLA scalars to the trace."""
        shape = m_new.shape
        rec["m"].append(m_new.astype(np.float64))
        rec["rescaled"].append(np.array(resc, bool))
        if sc is None:
            rec["n"].append(np.zeros(shape, np.int64))
            rec["dn"].append(np.zeros(shape, np.int64))
            rec["r_hat"].append(np.ones(shape))
            rec["cof"].append(np.ones(shape))
            rec["eps"].append(np.zeros(shape))
            rec["N"].append(np.zeros(shape, np.int32))
            return
        rec["n"].append(sc.n.astype(np.int64))
        rec["dn"].append(sc.dn.astype(np.int64))
        rec["r_hat"].append(sc.r_hat.astype(np.float64))
        rec["cof"].append(sc.cof.astype(np.float64))
        rec["eps"].append(sc.eps.astype(np.float64))
        rec["N"].append((np.zeros(shape, np.int64) if j == 0 else sc.N).astype(np.int32))

    @staticmethod
    def _trace(rec: dict[str, list[Any]]) -> Trace:
        return Trace(**{key: np.stack(vals) for key, vals in rec.items()})
