"""The kernels' split-KV choice (:mod:`amla_numerics.pipeline.split_rules`) against oracles.

- CANN ``SplitCore``: an independent block-at-a-time transcription of the host code's state
  machine (``GetBlockNumOnCore`` with its ``AssignInfo`` left-costs, as
  hicann/ops-transformer ``attention/common/op_host/split_core.h`` keeps them) against the
  closed-form greedy, on random shapes; hand-computed cases (48 cores, batch 1/8/128,
  s_k 4K/32K/1M) worked out from the source's constants in the comments.
- FlashMLA ``get_mla_metadata_kernel``: hand-computed payloads; every part within it.
- Properties of :func:`~amla_numerics.pipeline.plan.split_work`: every block on exactly one
  core, the busiest core at least the mean, split counts from the runs, and
  :func:`~amla_numerics.pipeline.plan.estimated_blocks` an upper estimate.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.plan import estimated_blocks, split_work
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.shape import AttentionShape
from amla_numerics.pipeline.split_rules import (
    FLASHMLA_OVERHEAD_BLOCKS,
    cann_block_cost,
    cann_core_loads,
    cann_split,
    flashmla_split,
)
from tests.strategies import examples

ASCEND = load_hardware("ascend910c")
H800 = load_hardware("h800_sxm5")


# -- an independent transcription of CANN's GetBlockNumOnCore ------------------------------
def _oracle_core_blocks(s1g: int, mbase: int, s2: int, sbase: int, batches: int, cores: int):
    """Block counts and costs per core, one block at a time, state as the host code keeps it."""
    n1, t1 = -(-s1g // mbase), s1g % mbase
    n2, t2 = -(-s2 // sbase), s2 % sbase
    unit = batches * n1 * n2 <= cores

    def cost(m: int, n: int) -> int:
        return 10 if unit else 6 * -(-m // 16) + 10 * -(-n // 64)

    def block_cost(i: int, j: int) -> int:
        return cost(t1 if (i == n1 - 1 and t1) else mbase, t2 if (j == n2 - 1 and t2) else sbase)

    row_cost = [sum(block_cost(i, j) for j in range(n2)) for i in range(n1)]
    batch_cost = sum(row_cost)
    last = block_cost(n1 - 1, n2 - 1)
    out_blocks, out_costs = [], []
    b = i = j = 0
    b_left, r_left = batch_cost, row_cost[0]
    b_left_n, r_left_n = n1 * n2, n2
    unassigned, c, complete = batches * batch_cost, 0, False
    while unassigned > 0 and c < cores:
        lim = unassigned // (cores - c)
        cur = nb = 0
        while not complete and lim + last // 2 >= cur + b_left:  # AssignByBatch
            cur, nb = cur + b_left, nb + b_left_n
            if b == batches - 1:
                complete = True
                break
            b, i, j = b + 1, 0, 0
            b_left, r_left, b_left_n, r_left_n = batch_cost, row_cost[0], n1 * n2, n2
        if not complete:  # AssignByRow
            tol = block_cost(i, n2 - 1) // 2
            while lim + tol >= cur + r_left:
                cur, nb = cur + r_left, nb + r_left_n
                b_left, b_left_n = b_left - r_left, b_left_n - r_left_n
                i, j = i + 1, 0
                r_left, r_left_n = (row_cost[i], n2) if i < n1 else (0, 0)
                if i >= n1 - 1:
                    break
        if not complete:  # AssignByBlock
            while j < n2:
                cc = block_cost(i, j)
                if not (lim + cc // 2 >= cur + cc or nb == 0):
                    break
                cur, nb, j = cur + cc, nb + 1, j + 1
                b_left, r_left = b_left - cc, r_left - cc
                b_left_n, r_left_n = b_left_n - 1, r_left_n - 1
        out_blocks.append(nb)
        out_costs.append(cur)
        unassigned -= cur
        c += 1
    return out_blocks, out_costs


def _oracle_split_core(s1g, mbase, s2, sbase, batches, cores):
    total = batches * -(-s1g // mbase) * -(-s2 // sbase)
    hi = min(cores, total)
    lo = min(int(math.sqrt(total + 0.25) + 0.5), hi)
    best = None
    for k in range(lo, hi + 1):
        blocks, costs = _oracle_core_blocks(s1g, mbase, s2, sbase, batches, k)
        if best is None or max(costs) < max(best[1]):
            best = (blocks, costs)
    return best


def _tiles(s1g: int, mbase: int, s2: int) -> tuple[tuple[int, int], ...]:
    return tuple((min(mbase, s1g - i), s2) for i in range(0, s1g, mbase))


@settings(max_examples=examples(60), deadline=None)
@given(
    s1g=st.integers(1, 700),
    mbase=st.sampled_from([128, 256]),
    s2=st.integers(1, 9000),
    sbase=st.sampled_from([128, 512]),
    batches=st.integers(1, 40),
    cores=st.integers(1, 48),
)
def test_cann_greedy_matches_the_block_at_a_time_transcription(
    s1g, mbase, s2, sbase, batches, cores
) -> None:
    loads = cann_core_loads(_tiles(s1g, mbase, s2), batches, sbase, cores)
    blocks, costs = _oracle_split_core(s1g, mbase, s2, sbase, batches, cores)
    assert [x[3] for x in loads] == blocks
    assert [x[4] for x in loads] == costs


def test_cann_block_cost_is_the_source_formula() -> None:
    # CalBasicCost: 6 per started 16 rows + 10 per started 64 keys
    assert cann_block_cost(256, 512) == 6 * 16 + 10 * 8 == 176
    assert cann_block_cost(128, 512) == 128
    assert cann_block_cost(1, 1) == 16
    assert cann_block_cost(17, 65) == 32


def test_cann_hand_computed_cases_48_cores() -> None:
    """s_q 1, 128 heads: one 128-row tile per request, 512-key blocks, 48 cores."""

    def summary(batch, s_k):
        r = cann_split(((128, s_k),), batch, 512, 48)
        return len(r.runs), max(r.blocks), min(r.blocks)

    # batch 1, 4K: 8 blocks <= 48 cores, so every block costs 10; core counts 3..8 are
    # tried (round(sqrt(8.25)) = 3); 8 cores of one block each is the only max cost 10
    assert summary(1, 4096) == (8, 1, 1)
    # batch 1, 32K: 64 blocks of cost 128; one block a core is impossible (64 > 48), two
    # a core first at 32 cores: limit 8192 // 32 = 256 = two blocks, a third exceeds 256 + 64
    assert summary(1, 32768) == (32, 2, 2)
    # batch 8, 32K: 512 blocks; at most 11 a core needs >= 47 cores (ceil(512 / 46) = 12):
    # 47 is the first count tried whose greedy keeps every core at <= 11 blocks
    assert summary(8, 32768) == (47, 11, 10)
    # batch 1, 1M: 2048 blocks, counts 45..48 tried (round(sqrt(2048.25)) = 45);
    # 48 cores, ceil(2048 / 48) = 43
    assert summary(1, 1 << 20) == (48, 43, 42)
    # batch 128, 32K: 8192 blocks, only 48 cores tried; ceil(8192 / 48) = 171
    assert summary(128, 32768) == (48, 171, 170)


def test_cann_anchor_first_core_by_hand() -> None:
    """Batch 128, s_q 2 (256-row tile), 16K: 32 blocks of cost 176 a request. Core 0: limit
    128 x 32 x 176 // 48 = 15018; two whole requests (11264), a third exceeds 15018 + 88;
    then (15018 + 88 - 11264) // 176 = 21 blocks: 85 blocks, cost 14960."""
    r = cann_split(((256, 16384),), 128, 512, 48)
    assert r.runs[0] == ((0, 0, 32), (1, 0, 32), (2, 0, 21))
    assert (r.blocks[0], r.costs[0]) == (85, 14960)
    assert max(r.blocks) == 86 and len(r.runs) == 48


def test_flashmla_hand_computed_payloads() -> None:
    # batch 1, 32K keys, 64-token blocks: 512 blocks; 66 parts (132 SMs / 2 row tiles):
    # payload ceil(517 / 66) + 5 = 13, so 8 blocks a part, 64 parts
    r = flashmla_split(512, 1, 66)
    assert len(r.runs) == 64 and set(r.blocks) == {8}
    # batch 128, 8K keys (128 blocks), 132 parts: payload ceil(128 x 133 / 132) + 5 = 134:
    # each part one whole request (133 <= 134) and no room (1 - 5 <= 0) for a piece of the next
    r = flashmla_split(128, 128, 132)
    assert len(r.runs) == 128 and set(r.blocks) == {128}
    assert all(len(s) == 1 for s in r.runs)


@settings(max_examples=examples(40), deadline=None)
@given(blocks=st.integers(1, 3000), requests=st.integers(1, 200), parts=st.integers(1, 132))
def test_flashmla_parts_cover_every_block_within_the_payload(blocks, requests, parts) -> None:
    r = flashmla_split(blocks, requests, parts)
    payload = -(-requests * (blocks + FLASHMLA_OVERHEAD_BLOCKS) // parts) + FLASHMLA_OVERHEAD_BLOCKS
    assert max(r.costs) <= payload
    seen = [(t, a, b) for segs in r.runs for t, a, b in segs]
    for t in range(requests):
        mine = [(a, b) for u, a, b in seen if u == t]
        assert mine[0][0] == 0 and mine[-1][1] == blocks
        assert all(x[1] == y[0] for x, y in itertools.pairwise(mine))


shapes = st.builds(
    AttentionShape,
    batch=st.integers(1, 64),
    q_len=st.integers(1, 4),
    kv_len=st.integers(1, 70000),
    heads=st.sampled_from([16, 64, 128]),
    causal=st.booleans(),
)


@settings(max_examples=examples(40), deadline=None)
@given(wl=shapes, gpu=st.booleans(), kv_block=st.sampled_from([None, 128]))
def test_split_work_assigns_every_block_once_and_estimates_from_above(wl, gpu, kv_block) -> None:
    hw = H800 if gpu else ASCEND
    sch = default_schedule(hw, "amla", **({} if kv_block is None else {"kv_block": kv_block}))
    sp = split_work(hw, wl, sch)
    est = estimated_blocks(hw, wl, sch)
    assert sp.blocks_per_core <= est
    tiles = len(sp.row_tiles)
    if gpu:
        return  # FlashMLA's parts: tested above on the rule itself
    r = cann_split(
        tuple(
            (min(sch.m_tile, wl.rows - t * sch.m_tile), _keys(wl, sch.m_tile, t))
            for t in range(tiles)
        ),
        wl.groups,
        sch.kv_block,
        int(hw["cores"]),
    )
    lengths = [-(-_keys(wl, sch.m_tile, t % tiles) // sch.kv_block) for t in range(sp.tasks)]
    # every block of every task exactly once, in walk order
    flat = [(t, j) for segs in r.runs for t, a, b in segs for j in range(a, b)]
    assert flat == [(t, j) for t in range(sp.tasks) for j in range(lengths[t])]
    assert sp.active_cores == len(r.runs)
    assert sp.blocks_per_core == r.blocks[r.busiest] and r.costs[r.busiest] == max(r.costs)
    assert max(r.blocks) >= -(-sum(lengths) // len(r.runs))
    # split counts: pieces of each task = its segments
    pieces = [0] * sp.tasks
    for segs in r.runs:
        for t, _, _ in segs:
            pieces[t] += 1
    split = [p for p in pieces if p > 1]
    assert (sp.split_tasks, sp.partials, sp.max_splits) == (len(split), sum(split), max(pieces))


def _keys(wl: AttentionShape, m_tile: int, tile: int) -> int:
    if not wl.causal:
        return wl.kv_len
    last_row = min((tile + 1) * m_tile, wl.rows) - 1
    return wl.kv_len - wl.q_len + last_row // (wl.heads // wl.kv_heads) + 1
