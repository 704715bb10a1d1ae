"""How the work is tiled and ordered (:class:`Schedule`), and whether the tiles fit.

The shape (:class:`~amla_numerics.pipeline.shape.AttentionShape`) fixes the FLOPs and
bytes; the schedule decides which engine waits for which. :func:`check_capacity`
verifies first that every on-chip buffer (L1, L0A, L0B, L0C, UB on Ascend; shared
memory on a GPU) holds the tiles the schedule asks for, and rejects a
tiling that does not fit with the reason.

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, load_hardware
>>> hw = load_hardware("ascend910c")
>>> wl = AttentionShape(batch=128, q_len=2, kv_len=16384)
>>> sch = default_schedule(hw, "amla")
>>> sorted(check_capacity(hw, wl, sch))
['L0A', 'L0B', 'L0C', 'L1', 'UB']
>>> check_capacity(hw, wl, default_schedule(hw, "amla", l1_stream_buffers=4))
Traceback (most recent call last):
...
ValueError: schedule.l1_stream_buffers: the tiling does not fit L1: ... = 576 KB > 512 KB
"""

from __future__ import annotations

import dataclasses
import math

from amla_numerics.pipeline.hardware import Hardware
from amla_numerics.pipeline.rescale import check_model_variant, rescale_cost
from amla_numerics.pipeline.shape import AttentionShape, check_int

__all__ = [
    "SCHEDULES",
    "Schedule",
    "check_capacity",
    "default_schedule",
    "tasks_per_request",
]

#: The orderings the simulator knows.
SCHEDULES: tuple[str, ...] = ("serial", "preload")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Tiling, buffering and ordering of one kernel.

    Parameters
    ----------
    variant : str
        The rescaling variant (one of :data:`amla_numerics.variants.VARIANTS`).
    order : str
        ``"preload"`` (C1 of block t+depth-1 issued before C2 of block t) or ``"serial"``.
    preload_depth : int
        Blocks in flight between the Cube and the Vector cores (2 in the kernel; 1 = serial).
    kv_block, m_tile : int
        Tokens per KV block; query rows per task (heads x q_len padded into tiles of this).
    cube_m, cube_n : int
        Output tile of one MMAD sequence (L0C tile is cube_m x cube_n FP32).
    l1_k_qk, l0_k_qk, l1_k_pv, l0_k_pv : int
        K splits of QK^T and PV in L1 and L0.
    l1_block_bytes, l1_stream_buffers : int
        Size and count of the L1 blocks streaming K, V and A (Q stays resident).
    l0_buffers, l0c_buffers, ub_buffers : int
        Ping-pong depths of L0A/L0B, L0C and the Vector's UB tiles.
    vec_rows : int
        Rows per Vector sub-tile.
    rescale_prob : float or None
        Fraction of blocks that rescale; only the ``lazy`` variant takes it
        (None: :data:`~amla_numerics.pipeline.rescale.DEFAULT_LAZY_RESCALE_PROB`).
    split_kv : bool
        Balance work across cores by splitting requests along the KV axis
        (flash-decoding) as the hardware's kernel does
        (:mod:`~amla_numerics.pipeline.split_rules`): CANN's cost-balanced runs of
        (task, KV block) on Ascend, FlashMLA's metadata (5-block request overhead) on a
        GPU. A task cut into several pieces needs the combine stage.
    splits : int or None
        An explicit split count S (every task cut into S pieces of equal block counts,
        pieces dealt round-robin to cores); None: the heuristic above (``split_kv``).
    """

    variant: str = "amla"
    order: str = "preload"
    preload_depth: int = 2
    kv_block: int = 512
    m_tile: int = 256
    cube_m: int = 128
    cube_n: int = 128
    l1_k_qk: int = 288
    l0_k_qk: int = 96
    l1_k_pv: int = 256
    l0_k_pv: int = 128
    l1_block_bytes: int = 73728
    l1_stream_buffers: int = 3
    l0_buffers: int = 2
    l0c_buffers: int = 2
    ub_buffers: int = 2
    vec_rows: int = 16
    rescale_prob: float | None = None
    split_kv: bool = True
    splits: int | None = None

    def __post_init__(self) -> None:
        check_model_variant(self.variant, "schedule.variant")
        if self.order not in SCHEDULES:
            raise ValueError(
                f"schedule.order must be one of {', '.join(SCHEDULES)}, got {self.order!r}"
            )
        for f in dataclasses.fields(self):
            if f.type == "int" or f.type is int:
                check_int("schedule", f.name, getattr(self, f.name))
        if self.splits is not None:
            check_int("schedule", "splits", self.splits)
        if not isinstance(self.split_kv, bool):
            raise TypeError(f"schedule.split_kv must be a bool, got {type(self.split_kv).__name__}")
        if self.rescale_prob is not None:
            rescale_cost(self.variant, self.rescale_prob)  # validates range and variant

    @property
    def depth(self) -> int:
        """Effective preload depth (1 for the serial order)."""
        return 1 if self.order == "serial" else self.preload_depth


def default_schedule(hw: Hardware, variant: str = "amla", **overrides: object) -> Schedule:
    """The kernel's tiling for ``hw`` (Ascend: the CANN MLA kernel; GPU: FlashMLA).

    Examples
    --------
    >>> from amla_numerics.pipeline.hardware import load_hardware
    >>> s = default_schedule(load_hardware("h800_sxm5"), "fa_fp32")
    >>> s.kv_block, s.m_tile
    (64, 64)
    """
    if hw.kind == "gpu":
        # FlashMLA: 64 rows x 64 tokens per step; QK, softmax and PV of a block in sequence
        # (assumption: no inter-warpgroup overlap), K/V double-buffered in shared memory.
        base: dict[str, object] = dict(
            kv_block=64,
            m_tile=64,
            cube_m=64,
            cube_n=64,
            l1_k_qk=576,
            l0_k_qk=576,
            l1_k_pv=64,
            l0_k_pv=64,
            order="serial",
        )
    elif rescale_cost(variant).design == "ub":
        # O resident in UB: 32 rows x 512 x 4 B = 64 KB per AIV beside 8-row S/P/partial
        # tiles, so a row tile holds 64 rows (the layout of DeepSeek's Ascend kernels)
        base = dict(m_tile=64, cube_m=64, vec_rows=8)
    else:
        base = {}
    kv = overrides.get("kv_block")
    if hw.kind != "gpu" and isinstance(kv, int) and kv > 0 and "l1_k_pv" not in overrides:
        # smaller KV blocks: the PV K split follows the block (CANN tiles s2 the same way)
        base["l1_k_pv"] = min(256, kv)
        base["l0_k_pv"] = min(128, kv)
    base.update(overrides)
    return Schedule(variant=variant, **base)  # type: ignore[arg-type]


def _kb(x: float) -> str:
    return f"{x / 1024:g} KB"


def _divides(field: str, a: int, b_name: str, b: int) -> None:
    if b % a:
        raise ValueError(f"schedule.{field} ({a}) must divide {b_name} ({b})")


def _check_smem(hw: Hardware, wl: AttentionShape, sch: Schedule) -> dict[str, tuple[int, int]]:
    """A GPU: Q, two KV stages and P in shared memory."""
    smem = int(hw["smem_bytes"])
    q = sch.m_tile * wl.d_qk * 2
    kv = 2 * sch.kv_block * wl.cache_token_bytes
    p = sch.m_tile * sch.kv_block * 2
    used = q + kv + p
    if used > smem:
        raise ValueError(
            f"schedule.kv_block: the tiling does not fit shared memory: Q {_kb(q)}"
            f" + 2 KV stages {_kb(kv)} + P {_kb(p)} = {_kb(used)} > {_kb(smem)}"
        )
    return {"SMEM": (used, smem)}


def _check_divisors(hw: Hardware, wl: AttentionShape, sch: Schedule) -> int:
    """Every tile divides what it tiles; returns the rows per vector core."""
    _divides("cube_m", sch.cube_m, "m_tile", sch.m_tile)
    _divides("cube_n", sch.cube_n, "kv_block", sch.kv_block)
    _divides("cube_n", sch.cube_n, "d_v", wl.d_v)
    _divides("l1_k_qk", sch.l1_k_qk, "d_qk", wl.d_qk)
    _divides("l0_k_qk", sch.l0_k_qk, "l1_k_qk", sch.l1_k_qk)
    _divides("l1_k_pv", sch.l1_k_pv, "kv_block", sch.kv_block)
    _divides("l0_k_pv", sch.l0_k_pv, "l1_k_pv", sch.l1_k_pv)
    per_aiv = sch.m_tile // int(hw["vector_per_core"])
    if per_aiv == 0 or per_aiv % sch.vec_rows:
        raise ValueError(
            f"schedule.vec_rows ({sch.vec_rows}) must divide the rows per vector core ({per_aiv})"
        )
    return per_aiv


def _check_l1(hw: Hardware, wl: AttentionShape, sch: Schedule) -> tuple[int, int]:
    """L1: Q resident + streaming blocks; every streamed chunk must fit one block."""
    l1 = int(hw["l1_bytes"])
    chunks = {"l1_k_qk": sch.cube_n * sch.l1_k_qk * 2, "l1_k_pv": sch.cube_m * sch.l1_k_pv * 2}
    for field, size in chunks.items():
        if size > sch.l1_block_bytes:
            raise ValueError(
                f"schedule.{field}: an L1 chunk of {_kb(size)} does not fit an L1 "
                f"block of {_kb(sch.l1_block_bytes)} (schedule.l1_block_bytes)"
            )
    q = sch.m_tile * wl.d_qk * 2
    used = q + sch.l1_stream_buffers * sch.l1_block_bytes
    if used > l1:
        raise ValueError(
            f"schedule.l1_stream_buffers: the tiling does not fit L1: Q {_kb(q)} + "
            f"{sch.l1_stream_buffers} x {_kb(sch.l1_block_bytes)} = {_kb(used)} > "
            f"{_kb(l1)}"
        )
    return used, l1


def _check_l0(hw: Hardware, sch: Schedule) -> dict[str, tuple[int, int]]:
    """L0A/L0B ping-pong pairs and the L0C output tiles."""
    out: dict[str, tuple[int, int]] = {}
    k0 = max(sch.l0_k_qk, sch.l0_k_pv)
    for buf, size in (("L0A", sch.cube_m * k0 * 2), ("L0B", k0 * sch.cube_n * 2)):
        cap = int(hw[f"{buf.lower()}_bytes"])
        used = sch.l0_buffers * size
        if used > cap:
            raise ValueError(
                f"schedule.l0_buffers: the tiling does not fit {buf}: "
                f"{sch.l0_buffers} x {_kb(size)} = {_kb(used)} > {_kb(cap)}"
            )
        out[buf] = (used, cap)
    return out


def _check_l1_resident(wl: AttentionShape, sch: Schedule) -> None:
    """The L1 chunks of one output column stay resident while its row sub-tiles use them."""
    kc = max(wl.d_qk // sch.l1_k_qk, sch.kv_block // sch.l1_k_pv)
    if sch.l1_stream_buffers < kc:
        raise ValueError(
            f"schedule.l1_stream_buffers ({sch.l1_stream_buffers}) must be >= the "
            f"L1 chunks of one output column ({kc}): they stay resident while "
            "every row sub-tile uses them"
        )


def _check_l0c(hw: Hardware, sch: Schedule) -> tuple[int, int]:
    cap = int(hw["l0c_bytes"])
    size = sch.cube_m * sch.cube_n * 4
    used = sch.l0c_buffers * size
    if used > cap:
        raise ValueError(
            f"schedule.l0c_buffers: the tiling does not fit L0C: {sch.l0c_buffers} x "
            f"{_kb(size)} = {_kb(used)} > {_kb(cap)}"
        )
    return used, cap


def _check_ub(hw: Hardware, wl: AttentionShape, sch: Schedule, per_aiv: int) -> tuple[int, int]:
    """UB: the S/A/O sub-tiles, the row vectors and (UB-resident design) O itself."""
    cap = int(hw["ub_bytes"])
    tile = sch.vec_rows * (sch.kv_block * 4 + sch.kv_block * 2 + wl.d_v * 4)
    rowvec = per_aiv * 4 * 8  # m, l, n, r^, cof, N, scale, spare: FP32/INT32 per row
    resident = per_aiv * wl.d_v * 4 if rescale_cost(sch.variant).design == "ub" else 0
    used = sch.ub_buffers * tile + rowvec + resident
    if used > cap:
        extra = f" + O resident {_kb(resident)}" if resident else ""
        raise ValueError(
            f"schedule.vec_rows: the tiling does not fit UB: {sch.ub_buffers} x "
            f"{_kb(tile)} (S fp32 + A bf16 + O fp32 for {sch.vec_rows} rows) + "
            f"{_kb(rowvec)} row vectors{extra} = {_kb(used)} > {_kb(cap)}"
        )
    return used, cap


def check_capacity(hw: Hardware, wl: AttentionShape, sch: Schedule) -> dict[str, tuple[int, int]]:
    """Check that the schedule's tiles fit every buffer; return name -> (used, capacity) bytes.

    Raises
    ------
    ValueError
        Naming the schedule field and the buffer that overflows, with the arithmetic.
    """
    if hw.kind == "gpu":
        return _check_smem(hw, wl, sch)
    per_aiv = _check_divisors(hw, wl, sch)
    l1 = _check_l1(hw, wl, sch)
    out: dict[str, tuple[int, int]] = {"L1": l1, **_check_l0(hw, sch)}
    _check_l1_resident(wl, sch)
    out["L0C"] = _check_l0c(hw, sch)
    out["UB"] = _check_ub(hw, wl, sch, per_aiv)
    return out


def tasks_per_request(wl: AttentionShape, sch: Schedule) -> int:
    """Row tiles per request (ceil(rows / m_tile))."""
    return math.ceil(wl.rows / sch.m_tile)
