"""The two layers of the pipeline model against independent oracles.

- AttentionShape and capacity: closed-form FLOPs, bytes and intensity as Fractions; buffer use
  recomputed by hand from the design card's tiling (Q 288 KB + 3 x 72 KB = 504 KB of L1 ...).
- The discrete-event simulator without shared resources against a recurrence oracle
  (start = max(previous op on the pipe, every dependency + latency)).
- The DES and the analytic layer carry the same work: summed over the simulation, each
  shared resource's bytes and each engine's pure cycles equal the analytic totals.
- Data movement of each rescale variant, recomputed from its definition.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics.pipeline import evaluate, run
from amla_numerics.pipeline.analytic import analyze, workload_totals
from amla_numerics.pipeline.des import OpGraph, simulate
from amla_numerics.pipeline.graph import build_graph, rescaled_blocks
from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.plan import make_plan, split_work
from amla_numerics.pipeline.rescale import rescale_cost
from amla_numerics.pipeline.schedule import Schedule, check_capacity, default_schedule
from amla_numerics.pipeline.shape import AttentionShape
from amla_numerics.variants import VARIANTS
from tests.strategies import examples

ASCEND = load_hardware("ascend910c")
H800 = load_hardware("h800_sxm5")
KB = 1024


# -- closed forms -------------------------------------------------------------------------
workloads = st.builds(
    AttentionShape,
    batch=st.integers(1, 300),
    q_len=st.integers(1, 4),
    kv_len=st.integers(1, 70000),
    heads=st.sampled_from([16, 32, 64, 128]),
)


@settings(max_examples=examples(60))
@given(wl=workloads, variant=st.sampled_from(VARIANTS), gpu=st.booleans())
def test_flops_bytes_intensity_match_the_closed_forms_exactly(wl, variant, gpu) -> None:
    b, sq, h, sk = wl.batch, wl.q_len, wl.heads, wl.kv_len
    flops = Fraction(2 * b * sq * h * sk * (576 + 512))
    hbm = Fraction(b * sk * 576 * 2 + b * h * sq * (576 + 512) * 2)
    assert wl.flops == flops
    assert wl.hbm_bytes == hbm
    assert wl.intensity == float(flops / hbm)  # one correctly rounded division
    hw = H800 if gpu else ASCEND
    totals = workload_totals(make_plan(hw, wl, default_schedule(hw, variant)))
    assert totals["flops"] == flops  # summed block by block, every task
    assert totals["hbm_bytes"] == hbm


def test_design_card_decode_formula() -> None:
    # amla.md section 1: FLOPs per request = 2 s_q 128 s_k (576 + 512); bytes ~= 2 * 576 * s_k
    wl = AttentionShape(batch=1, q_len=2, kv_len=8192)
    assert wl.flops == 2 * 2 * 128 * 8192 * 1088
    assert wl.hbm_bytes - wl.rows * (576 + 512) * 2 == 2 * 576 * 8192  # + Q in, output out


def test_steady_block_demand_is_the_formula() -> None:
    a = analyze(
        make_plan(ASCEND, AttentionShape(128, 2, 16384), default_schedule(ASCEND, "fa_fp32"))
    )
    d = a.demand
    m, n = 256, 512
    assert d.flops == 2 * m * n * 1088
    tiles = (m // 128) * (n // 128) + (m // 128) * (512 // 128)
    overhead = ASCEND["mmad_overhead_cycles"]
    assert d.engines["AIC.Cube"] == 2 * m * n * 1088 / 8192 + overhead * tiles
    assert d.engines["AIC.MTE2"] == (n * 576 * 2 + n * 512 * 2 + m * n * 2) / 110
    assert d.engines["AIC.FIX"] == (m * n * 4 + m * 512 * 4) / 128  # S, then the P V partial
    r = m // 2  # rows per AIV; fa_fp32 (CANN workspace path): partial AND old O in, O out
    assert d.engines["AIV.MTE2"] == (r * n * 4 + r * 512 * 4 + r * 512 * 4) / 110
    assert d.engines["AIV.MTE3"] == (r * n * 2 + r * 512 * 4) / 64
    assert d.traffic["HBM (chip share)"] == n * 576 * 2
    # the Vector: 5 plain passes + exp (2 repeats' time) over S, 2 row ops, 2 passes over O
    vec = r * n * 4 / 256 * (5 + 2) + 2 * math.ceil(r * 4 / 256) + r * 512 * 4 / 256 * 2
    assert d.engines["AIV.Vector"] == vec


# -- inputs and capacity --------------------------------------------------------------------
def test_kernel_tiling_fits_with_the_design_card_numbers() -> None:
    used = check_capacity(ASCEND, AttentionShape(128, 2, 16384), default_schedule(ASCEND))
    assert used["L1"] == (288 * KB + 3 * 72 * KB, 512 * KB)  # 7 blocks of 72 KB = 504 KB
    assert used["L0A"] == (2 * 32 * KB, 64 * KB)
    assert used["L0B"] == (2 * 32 * KB, 64 * KB)
    assert used["L0C"] == (2 * 64 * KB, 128 * KB)
    assert used["UB"][0] <= 192 * KB


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"l1_stream_buffers": 4}, "schedule.l1_stream_buffers: the tiling does not fit L1"),
        ({"l0c_buffers": 3}, "schedule.l0c_buffers: the tiling does not fit L0C"),
        ({"l0_buffers": 3}, "schedule.l0_buffers: the tiling does not fit L0A"),
        ({"vec_rows": 32}, "schedule.vec_rows: the tiling does not fit UB"),
        ({"cube_n": 96}, "schedule.cube_n (96) must divide kv_block (512)"),
        ({"l1_k_qk": 576}, "schedule.l1_k_qk: an L1 chunk of 144 KB does not fit"),
    ],
)
def test_tiling_that_does_not_fit_is_rejected_with_the_reason(override, message) -> None:
    sch = default_schedule(ASCEND, "amla", **override)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_capacity(ASCEND, AttentionShape(1, 2, 1024), sch)
    with pytest.raises(ValueError, match=r"does not fit|must divide"):
        run(ASCEND, AttentionShape(1, 2, 1024), sch)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": -1, "q_len": 1, "kv_len": 8}, "shape.batch must be >= 1, got -1"),
        ({"batch": 1, "q_len": 0, "kv_len": 8}, "shape.q_len must be >= 1, got 0"),
        ({"batch": 1, "q_len": 1, "kv_len": 8, "d_v": 600}, "shape.d_v"),
    ],
)
def test_bad_workload_names_the_field(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        AttentionShape(**kwargs)
    with pytest.raises(TypeError, match=r"shape.kv_len must be an int"):
        AttentionShape(1, 1, 2.5)  # type: ignore[arg-type]


def test_bad_schedule_names_the_field() -> None:
    with pytest.raises(ValueError, match="unknown variant 'fp64'"):
        Schedule(variant="fp64")
    with pytest.raises(ValueError, match=r"schedule.order"):
        Schedule(order="eager")
    with pytest.raises(ValueError, match=r"schedule.kv_block must be >= 1"):
        Schedule(kv_block=-512)
    with pytest.raises(ValueError, match="rescale_prob must be a number in"):
        Schedule(variant="lazy", rescale_prob=1.5)
    with pytest.raises(ValueError, match="applies only to variant 'lazy'"):
        evaluate(variant="amla", rescale_prob=0.5)


# -- the DES core against a recurrence oracle ------------------------------------------------
@st.composite
def graphs(draw):
    npipes = draw(st.integers(1, 4))
    ops = []
    for i in range(draw(st.integers(1, 40))):
        deps = (
            draw(
                st.lists(
                    st.tuples(st.integers(0, max(i - 1, 0)), st.sampled_from([0.0, 1.0, 7.5])),
                    max_size=3,
                )
            )
            if i
            else []
        )
        ops.append(
            (draw(st.integers(0, npipes - 1)), draw(st.sampled_from([0.0, 1.0, 2.5, 10.0])), deps)
        )
    return npipes, ops


@settings(max_examples=examples(150))
@given(graphs())
def test_des_without_resources_matches_the_recurrence(spec) -> None:
    npipes, ops = spec
    g = OpGraph([f"p{i}" for i in range(npipes)], {})
    for p, c, deps in ops:
        g.add(f"p{p}", c, deps)
    r = simulate(g)
    free = [0.0] * npipes  # oracle: op ids are a topological order, pipes are FIFO in id order
    end: list[float] = []
    for p, c, deps in ops:
        s = max([free[p]] + [end[d] + lat for d, lat in deps])
        end.append(s + c)
        free[p] = s + c
        assert r.start[len(end) - 1] == s
    assert r.end == end
    assert r.makespan == max(end)
    cp = r.critical_path_attribution()
    assert sum(cp.values()) == pytest.approx(1.0) or r.makespan == 0


def test_des_shared_resource_serves_fifo_and_charges_bytes_over_rate() -> None:
    g = OpGraph(["a", "b"], {"bus": 4.0})
    x = g.add("a", 1.0, demands=[("bus", 40)])  # 10 cycles on the bus > 1 own cycle
    y = g.add("b", 3.0, demands=[("bus", 8)])  # waits for the bus, then 2 cycles (< 3 own)
    r = simulate(g)
    assert (r.start[x], r.end[x], r.start[y], r.end[y]) == (0.0, 10.0, 10.0, 13.0)
    assert r.resource_busy() == {"bus": 12.0}
    # y waited for the bus held by x, whose duration the bus set (not pipe a)
    assert r.critical_path_attribution() == pytest.approx({"bus": 10 / 13, "b": 3 / 13})
    with pytest.raises(ValueError, match="must be an existing op id"):
        g.add("a", 1.0, deps=[5])


# -- the two layers carry the same work ---------------------------------------------------------
@pytest.mark.parametrize(
    ("hw", "variant", "wl"),
    [
        (ASCEND, "amla", AttentionShape(3, 3, 1000)),
        (ASCEND, "fa_fp32", AttentionShape(7, 2, 5000)),
        (ASCEND, "fa_bf16", AttentionShape(2, 1, 777)),
        (ASCEND, "amla_guarded", AttentionShape(50, 2, 2048)),
        (ASCEND, "naive", AttentionShape(5, 1, 3000)),
        (H800, "fa_fp32", AttentionShape(3, 2, 1000)),
        (H800, "naive", AttentionShape(16, 1, 4394)),
    ],
)
def test_des_and_analytic_carry_the_same_bytes_and_cycles(hw, variant, wl) -> None:
    sch = default_schedule(hw, variant)
    plan = make_plan(hw, wl, sch)
    a = analyze(plan)
    sim = simulate(build_graph(plan).graph)
    pipes, res = sim.pipe_busy(), sim.resource_busy()
    for k, v in a.engine_cycles.items():
        if k in res:
            assert res[k] == pytest.approx(v, rel=1e-12), k
    pure = (
        ["AIC.Cube", "AIC.MTE1", "AIV0.Vector"] if hw.kind == "ascend" else ["SM.Tensor", "SM.SIMT"]
    )
    for p in pure:  # engines without a shared-resource demand: busy time is their own cycles
        key = p.replace("AIV0", "AIV")
        assert pipes[p] == pytest.approx(a.engine_cycles[key], rel=1e-12), p
    assert sim.makespan >= max(a.engine_cycles.values()) * (1 - 1e-12)  # never beats the roofline


@pytest.mark.parametrize(
    "variant",
    [
        v
        for v in VARIANTS
        if rescale_cost(v).design == "atomic"
        and rescale_cost(v).p_bytes == rescale_cost("lazy").p_bytes
    ],
)
def test_rescale_traffic_is_the_variants_data_movement(variant) -> None:
    """Extra L2 bytes of an ``atomic``-design variant over 'no rescale at all' = its O bytes
    x rescaled blocks (the workspace designs: tests/test_pipeline_baselines.py). Variants
    with another P width (``amla_fp8``: 1-byte P) also move fewer P bytes: their traffic
    is tested with the FP8 P bytes, not here."""
    wl = AttentionShape(96, 2, 8192)
    sch = default_schedule(ASCEND, variant)
    cost = rescale_cost(variant)
    split = split_work(ASCEND, wl, sch)
    rescaled = sum(sum(rescaled_blocks(len(s), cost.probability)) for _, s in split.pieces)
    rows = 256  # heads x q_len, one row tile
    res = simulate(build_graph(make_plan(ASCEND, wl, sch)).graph).resource_busy()
    base = simulate(
        build_graph(make_plan(ASCEND, wl, default_schedule(ASCEND, "lazy", rescale_prob=0.0))).graph
    ).resource_busy()
    per_block = rows * 512
    read = (res["L2 read port"] - base["L2 read port"]) * 110
    expect_read = rescaled * per_block * cost.o_read_bytes
    if cost.two_pass:  # naive re-reads S (FP32, every block, both AIVs) instead of rescaling
        expect_read = sum(len(s) for _, s in split.pieces) * rows * 512 * 4
    assert read == pytest.approx(expect_read, abs=1e-6 * per_block)
    write = (res["L2 write port"] - base["L2 write port"]) * 86
    o_store = (cost.o_store_bytes - 4) * 256 * 512 * sum(len(s) for _, s in split.pieces)
    assert write == pytest.approx(
        rescaled * per_block * (cost.o_write_bytes + cost.o_atomic_bytes) + o_store,
        abs=1e-6 * per_block,
    )


def test_lazy_probability_sets_the_rescaled_fraction() -> None:
    for count, p in [(32, 0.125), (100, 0.3), (7, 1.0), (9, 0.0)]:
        flags = rescaled_blocks(count, p)
        assert not flags[0]
        assert sum(flags) == math.floor((count - 1) * p)
    slow = evaluate(variant="lazy", rescale_prob=1.0, batch=32, kv_len=4096)
    fast = evaluate(variant="lazy", rescale_prob=0.0, batch=32, kv_len=4096)
    assert slow.engines["L2 read port"] * slow.time_us > fast.engines["L2 read port"] * fast.time_us


def test_preload_beats_serial_and_is_cube_bound() -> None:
    wl = AttentionShape(48, 2, 8192)
    pre = run(ASCEND, wl, default_schedule(ASCEND, "amla"))
    ser = run(ASCEND, wl, default_schedule(ASCEND, "amla", order="serial"))
    assert pre.bound == "AIC.Cube"
    assert pre.time_us < ser.time_us
    assert pre.engines["AIC.Cube"] > ser.engines["AIC.Cube"]

    # serial: the Cube waits for the Vector, so AIV pipes or flags take a share of the path
    def aiv(r):
        return sum(v for k, v in r.critical_path.items() if k.startswith("AIV") or k == "latency")

    assert aiv(ser) > aiv(pre) + 0.05
    deeper = run(ASCEND, wl, default_schedule(ASCEND, "amla", preload_depth=3))
    assert deeper.time_us <= pre.time_us * 1.02


#: The fields every pipeline result carries (the library's to_dict and the CLI's JSON).
RESULT_KEYS = (
    "tflops",
    "utilization",
    "peak_tflops",
    "peak_name",
    "bound",
    "engines",
    "time_us",
    "hbm_gbps",
)


def test_result_fields_and_json() -> None:
    r = evaluate("ascend910c", "amla", batch=8, q_len=2, kv_len=2048)
    d = r.to_dict()
    for key in RESULT_KEYS:
        assert key in d
    assert r.tflops == pytest.approx(r.utilization * r.peak_tflops)
    assert r.tflops == pytest.approx(AttentionShape(8, 2, 2048).flops / r.time_us * 1e-6)
    assert r.hbm_gbps == pytest.approx(AttentionShape(8, 2, 2048).hbm_bytes / r.time_us * 1e-3)
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in r.engines.values())
    assert set(r.peaks) == {n for n, _ in ASCEND.peaks()}
    with pytest.raises(AttributeError):
        r.tflops = 1.0  # type: ignore[misc]


@settings(max_examples=examples(40))
@given(
    wl=st.builds(
        AttentionShape,
        batch=st.integers(1, 24),
        q_len=st.integers(1, 4),
        kv_len=st.integers(1, 5000),
        heads=st.sampled_from([16, 64, 128]),
    ),
    variant=st.sampled_from(VARIANTS),
    gpu=st.booleans(),
    order=st.sampled_from(["serial", "preload"]),
    depth=st.integers(1, 4),
    split_kv=st.booleans(),
    bufs=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(2, 3), st.integers(1, 2)),
)
def test_any_schedule_finishes_and_never_beats_its_roofline(
    wl, variant, gpu, order, depth, split_kv, bufs
) -> None:
    hw = H800 if gpu else ASCEND
    kw: dict = dict(order=order, preload_depth=depth, split_kv=split_kv)
    if not gpu:
        kw.update(
            zip(("l0_buffers", "ub_buffers", "l1_stream_buffers", "l0c_buffers"), bufs, strict=True)
        )
    r = run(hw, wl, default_schedule(hw, variant, **kw))  # a deadlock would raise
    assert 0 < r.tflops <= r.roofline_tflops * (1 + 1e-9)
    assert r.bound in r.critical_path


def test_default_lazy_probability_is_the_mla_measurement() -> None:
    """DEFAULT_LAZY_RESCALE_PROB = 0 documents a measurement on the seeded mla workload:
    recomputed here in float64 (independent of the emulator, whose lazy trace gave p = 0 on
    2026-11-26; docs/pipeline.md): no row's running max ever grows
    by more than tau = 8 log2 units after block 0, so no 512-token block rescales."""
    import numpy as np

    from amla_numerics.analysis.workloads import make_workload
    from amla_numerics.pipeline.rescale import DEFAULT_LAZY_RESCALE_PROB

    w = make_workload("mla", head_dim=576, kv_len=16384, rows=128, seed=0)
    s = w.scale * (np.asarray(w.q, np.float64) @ np.asarray(w.k, np.float64).T)
    running = np.maximum.accumulate(s.reshape(128, 32, 512).max(axis=2), axis=1)
    growth = np.diff(running, axis=1) * np.log2(np.e)
    assert growth.max() < 8.0 - 1.0  # 1 log2 unit of margin: far above FP32 score rounding
    assert DEFAULT_LAZY_RESCALE_PROB == 0.0
