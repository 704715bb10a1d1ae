"""The split-KV choice as the kernels make it: which core runs which KV blocks of which task.

Two rules, each read from the kernel's own host or metadata code (not copied; the
constants are cited where they are defined):

- :func:`cann_split` -- Ascend, CANN's fused-infer-attention MLA tiling
  (hicann/ops-transformer ``attention/common/op_host/split_core.h``: ``SplitCore``,
  ``GetBlockNumOnCore``, ``AssignByBatch``/``AssignByRow``/``AssignByBlock``,
  ``CalBasicCost``, ``ReconSplitPlan``; called by ``FiaTilingNonQuantMla::Split`` in
  ``attention/common/op_host/arch32/fia_tiling_nonquant_mla.cpp``).
- :func:`flashmla_split` -- GPU, FlashMLA's decoding metadata (deepseek-ai/FlashMLA
  ``csrc/smxx/decode/get_decoding_sched_meta/get_decoding_sched_meta.cu``:
  ``get_mla_metadata_kernel``; its arguments in ``csrc/api/dense_decode.h``).

Both return the cores' runs of (task, first block, end block) segments in the order the
kernel walks the work; :func:`~amla_numerics.pipeline.plan.split_work` turns them into the
busiest core's pieces and the split counts the combine needs.

Examples
--------
>>> r = cann_split(((128, 65536),), 1, 512, 48)   # batch 1, s_q 1, 128 heads, 64K keys
>>> len(r.runs), max(r.blocks), r.runs[0]         # the fewest cores at 3 blocks each
(43, 3, ((0, 0, 3),))
>>> f = flashmla_split(1024, 1, 66)               # the same on an H800: 66 parts
>>> len(f.runs), max(f.blocks)
(64, 16)
"""

from __future__ import annotations

import dataclasses
import functools
import math

__all__ = [
    "CANN_M_ALIGN",
    "CANN_M_WEIGHT",
    "CANN_S2_ALIGN",
    "CANN_S2_WEIGHT",
    "CANN_UNIT_COST",
    "FLASHMLA_OVERHEAD_BLOCKS",
    "CoreRuns",
    "cann_block_cost",
    "cann_core_loads",
    "cann_split",
    "flashmla_parts",
    "flashmla_split",
]

#: CANN ``CalBasicCost``: a block of m rows x n keys costs
#: ``CANN_M_WEIGHT * ceil(m / CANN_M_ALIGN) + CANN_S2_WEIGHT * ceil(n / CANN_S2_ALIGN)``.
CANN_M_ALIGN, CANN_M_WEIGHT = 16, 6
CANN_S2_ALIGN, CANN_S2_WEIGHT = 64, 10
#: CANN ``CalSplitBatchInfo``: every block's cost when there are no more blocks than cores.
CANN_UNIT_COST = 10
#: FlashMLA ``dense_decode.h`` (argument of ``get_mla_metadata_kernel``): each request
#: weighs this many KV blocks more than its own, and a part keeps this much payload for it.
FLASHMLA_OVERHEAD_BLOCKS = 5


@dataclasses.dataclass(frozen=True)
class CoreRuns:
    """The cores the kernel uses and what each runs.

    ``runs[c]`` lists core ``c``'s segments ``(task, first block, end block)`` (end
    exclusive) in walk order; ``blocks[c]`` its KV block count; ``costs[c]`` its load in
    the kernel's own cost unit (CANN: ``CalBasicCost`` units; FlashMLA: blocks plus
    :data:`FLASHMLA_OVERHEAD_BLOCKS` per segment).
    """

    runs: tuple[tuple[tuple[int, int, int], ...], ...]
    blocks: tuple[int, ...]
    costs: tuple[int, ...]

    @property
    def busiest(self) -> int:
        """The core with the largest cost (ties: the most blocks, then the first)."""
        return max(range(len(self.costs)), key=lambda c: (self.costs[c], self.blocks[c], -c))


def cann_block_cost(m: int, n: int) -> int:
    """CANN's cost of one block of ``m`` query rows x ``n`` keys (``CalBasicCost``).

    >>> cann_block_cost(256, 512), cann_block_cost(128, 64)
    (176, 58)
    """
    return CANN_M_WEIGHT * -(-m // CANN_M_ALIGN) + CANN_S2_WEIGHT * -(-n // CANN_S2_ALIGN)


def _rows(tiles: tuple[tuple[int, int], ...], block: int, unit: bool) -> list[tuple[int, int, int]]:
    """Per row tile (m rows, keys): (blocks, cost of a full block, cost of the last one)."""
    out = []
    for m, keys in tiles:
        n = max(1, -(-keys // block))
        tail = keys - (n - 1) * block
        if unit:
            out.append((n, CANN_UNIT_COST, CANN_UNIT_COST))
        else:
            out.append((n, cann_block_cost(m, block), cann_block_cost(m, tail)))
    return out


def _cann_assign(
    rows: list[tuple[int, int, int]], groups: int, k: int
) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """``GetBlockNumOnCore`` with ``k`` cores: per core (group, row, block) of its first
    block, its block count and its cost; and the largest cost.

    Each core's cost limit is the unassigned cost over the cores left (integer division);
    it takes the rest of the current batch (here: a (request, KV head) group) and whole
    batches while they fit within the limit plus half the batch's last block, then whole
    rows (the batch's last row never by row) within half the row's last block, then single
    blocks within half a block (at least one), never past the end of the row.
    """
    big_r = [(n - 1) * f + t for n, f, t in rows]
    batch_cost, batch_blocks = sum(big_r), sum(n for n, _, _ in rows)
    nrows = len(rows)
    unassigned = groups * batch_cost
    g = r = s = 0
    out: list[tuple[int, int, int, int, int]] = []
    worst = 0

    def row_left() -> tuple[int, int]:
        n, f, t = rows[r]
        return (0, 0) if s >= n else ((n - 1 - s) * f + t, n - s)

    c = 0
    while unassigned > 0 and c < k:
        limit = unassigned // (k - c)
        cur = nb = 0
        start = (g, r, s)
        done = False
        # 1. whole batches (AssignByBatch): tolerance half the batch's last block
        tol = rows[-1][2] // 2
        while True:
            rl, rb = row_left()
            left = rl + sum(big_r[r + 1 :])
            if cur + left > limit + tol:
                break
            cur += left
            nb += rb + sum(n for n, _, _ in rows[r + 1 :])
            if g == groups - 1:
                done = True
                break
            g, r, s = g + 1, 0, 0
            j = min(groups - 1 - g, max(0, (limit + tol - cur) // batch_cost))
            cur, nb, g = cur + j * batch_cost, nb + j * batch_blocks, g + j
        if not done:
            # 2. whole rows (AssignByRow): tolerance half the entry row's last block
            tol = rows[r][2] // 2
            while True:
                rl, rb = row_left()
                if cur + rl > limit + tol:
                    break
                cur, nb, r, s = cur + rl, nb + rb, r + 1, 0
                if r >= nrows - 1:
                    break
            # 3. single blocks (AssignByBlock), at least one, up to the end of the row
            n, f, t = rows[r]
            if s < n - 1:
                j = min(n - 1 - s, max(0, (limit + f // 2 - cur) // f))
                if j == 0 and nb == 0:
                    j = 1
                cur, nb, s = cur + j * f, nb + j, s + j
            if s == n - 1 and (cur + t <= limit + t // 2 or nb == 0):
                cur, nb, s = cur + t, nb + 1, s + 1
        out.append((*start, nb, cur))
        worst = max(worst, cur)
        unassigned -= cur
        c += 1
    return out, worst


@functools.lru_cache(maxsize=256)
def cann_core_loads(
    tiles: tuple[tuple[int, int], ...], groups: int, block: int, cores: int
) -> tuple[tuple[int, int, int, int, int], ...]:
    """CANN ``SplitCore``: the core count and per-core loads it chooses.

    ``tiles`` are the row tiles of one task group as (rows m, keys), ``groups`` the
    (request, KV head) pairs, ``block`` the KV block (``sInnerSize`` 512), ``cores`` the
    AI cores. Blocks cost :func:`cann_block_cost` (all :data:`CANN_UNIT_COST` when there are
    no more blocks than cores); every core count from round(sqrt(blocks + 1/4)) to
    min(cores, blocks) is tried and the first with the smallest largest cost is kept.
    Returns per used core (group, row, block) of its first block, its blocks and its cost.
    Cost O(cores^2 x row tiles): independent of the batch and the KV length.
    """
    total = groups * sum(max(1, -(-keys // block)) for _, keys in tiles)
    rows = _rows(tiles, block, unit=total <= cores)
    hi = min(cores, total)
    lo = min(int(math.sqrt(total + 0.25) + 0.5), hi)
    best: list[tuple[int, int, int, int, int]] = []
    best_cost = None
    for k in range(lo, hi + 1):
        loads, worst = _cann_assign(rows, groups, k)
        if best_cost is None or worst < best_cost:
            best, best_cost = loads, worst
    return tuple(best)


def cann_split(tiles: tuple[tuple[int, int], ...], groups: int, block: int, cores: int) -> CoreRuns:
    """CANN's split (``SplitCore`` then ``ReconSplitPlan``): each core's run of consecutive
    blocks in (group, row tile, KV block) order; task = group x len(tiles) + row tile.

    A run that starts or ends inside a task's blocks splits it (a flash-decode head, merged
    by ``FiaBlockVecFlashDecode``).

    >>> r = cann_split(((256, 16384),), 128, 512, 48)  # the AMLA anchor: 32 blocks a task
    >>> len(r.runs), max(r.blocks), min(r.blocks)
    (48, 86, 85)
    """
    nrows = len(tiles)
    counts = [max(1, -(-keys // block)) for _, keys in tiles]
    runs, blocks, costs = [], [], []
    for g, r, s, nb, cost in cann_core_loads(tiles, groups, block, cores):
        segs = []
        left = nb
        while left > 0:
            if s >= counts[r]:
                g, r, s = (g, r + 1, 0) if r + 1 < nrows else (g + 1, 0, 0)
                continue
            take = min(left, counts[r] - s)
            segs.append((g * nrows + r, s, s + take))
            s, left = s + take, left - take
        runs.append(tuple(segs))
        blocks.append(nb)
        costs.append(cost)
    return CoreRuns(tuple(runs), tuple(blocks), tuple(costs))


def flashmla_parts(cores: int, kv_heads: int, row_tiles: int) -> int:
    """FlashMLA's ``num_sm_parts`` = SMs / h_k / ceil(s_q h_q / h_k / 64), at least 1
    (``dense_decode.h``; ``row_tiles`` is the ceil, FlashMLA's tiles are 64 rows).

    >>> flashmla_parts(132, 1, 2), flashmla_parts(132, 1, 4)
    (66, 33)
    """
    return max(cores // kv_heads // row_tiles, 1)


def flashmla_split(blocks: int, requests: int, parts: int) -> CoreRuns:
    """FlashMLA ``get_mla_metadata_kernel``: requests of ``blocks`` KV blocks each over
    ``parts`` SM parts (every part's SMs run all KV heads and row tiles of its segments).

    Each request weighs its blocks plus :data:`FLASHMLA_OVERHEAD_BLOCKS`; a part's payload
    is ceil(total / parts) + the overhead; a part takes whole requests while the payload
    holds blocks + overhead, else the payload less the overhead (when positive) of the
    current request, splitting it. Task = request here.

    >>> r = flashmla_split(128, 128, 33)   # batch 128, s_k 8192, 64-token blocks, 4 tiles
    >>> max(r.blocks), len(r.runs)
    (501, 33)
    """
    over = FLASHMLA_OVERHEAD_BLOCKS
    payload = -(-requests * (blocks + over) // parts) + over
    req = now = 0
    runs, nbs, costs = [], [], []
    for _ in range(parts):
        remain, segs = payload, []
        while req < requests:
            left = blocks - now
            if remain >= left + over:
                segs.append((req, now, blocks))
                remain -= left + over
                req, now = req + 1, 0
            else:
                if remain - over > 0:
                    segs.append((req, now, now + remain - over))
                    now += remain - over
                break
        if segs:
            runs.append(tuple(segs))
            nbs.append(sum(b - a for _, a, b in segs))
            costs.append(nbs[-1] + over * len(segs))
    return CoreRuns(tuple(runs), tuple(nbs), tuple(costs))
