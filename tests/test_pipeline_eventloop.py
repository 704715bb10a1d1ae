"""The compiled event loop reproduces the reference simulator bit for bit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, make_plan
from amla_numerics.pipeline.des import OpGraph, simulate
from amla_numerics.pipeline.eventloop import freeze, run_events, simulate_compiled, walk
from amla_numerics.pipeline.graph import build_graph
from amla_numerics.pipeline.rescale import MODEL_VARIANTS
from tests.test_pipeline_periodic import BENCHMARK


def _assert_same(g: OpGraph) -> None:
    ref, got = simulate(g), simulate_compiled(g)
    assert got.start == ref.start
    assert got.end == ref.end
    assert got.blame == ref.blame
    assert got.limiter == ref.limiter
    assert got.critical_path_attribution() == ref.critical_path_attribution()


@pytest.mark.parametrize("hw_name, variant, shape, over", BENCHMARK)
def test_the_benchmark_set_is_simulated_bit_for_bit(hw_name, variant, shape, over):
    hw = load_hardware(hw_name)
    sch = default_schedule(hw, variant, **over)
    _assert_same(build_graph(make_plan(hw, AttentionShape(**shape), sch)).graph)


@pytest.mark.parametrize("hw_name", ["ascend910c", "h800_sxm5"])
@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_every_variant_is_simulated_bit_for_bit(hw_name, variant):
    hw = load_hardware(hw_name)
    sch = default_schedule(hw, variant, order="serial" if variant == "naive" else "preload")
    _assert_same(build_graph(make_plan(hw, AttentionShape(4, 2, 4096), sch)).graph)


@st.composite
def graphs(draw):
    """Random graphs with ties in ready times (integer cycles), latencies and two shared
    resources: the heap order, resource FIFO order and blame must all match."""
    g = OpGraph(["a", "b", "c"], {"x": draw(st.sampled_from([1.0, 3.0])), "y": 2.0})
    for n in range(draw(st.integers(1, 40))):
        deps = (
            draw(
                st.lists(
                    st.tuples(st.integers(0, max(n - 1, 0)), st.sampled_from([0, 2])), max_size=3
                )
            )
            if n
            else []
        )
        dem = draw(
            st.lists(
                st.tuples(st.sampled_from(["x", "y"]), st.integers(0, 12)),
                max_size=2,
                unique_by=lambda t: t[0],
            )
        )
        g.add(draw(st.sampled_from(["a", "b", "c"])), draw(st.integers(0, 6)), deps, dem, f"op {n}")
    return g


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_random_graphs_with_ties_are_simulated_bit_for_bit(g):
    _assert_same(g)


def test_a_graph_simulated_at_new_rates_matches_the_reference():
    hw = load_hardware("ascend910c")
    g = build_graph(make_plan(hw, AttentionShape(16, 2, 8192), default_schedule(hw, "amla"))).graph
    frozen = freeze(g)
    for scale in (0.25, 1.0, 4.0):
        g.set_rates({r: scale / x for r, x in zip(g.resources, g.inv_rates(), strict=True)})
        ref = simulate(g)
        assert run_events(g, frozen).end.tolist() == ref.end


def test_the_walk_charges_what_the_reference_attribution_charges():
    hw = load_hardware("ascend910c")
    g = build_graph(
        make_plan(hw, AttentionShape(8, 2, 8192), default_schedule(hw, "fa_fp32"))
    ).graph
    frozen = freeze(g)
    ev = run_events(g, frozen)
    path = walk(ev, g, frozen)
    names = [*g.pipes, *g.resources, "latency"]
    cp = np.zeros(len(names))
    path.charge(cp)
    ref = simulate(g).critical_path_attribution()
    got = {names[c]: cp[c] / ev.end.max() for c in path.order() if cp[c] > 0}
    assert list(got) == list(ref)  # the same names, in the order of first charge
    # the reference adds (total + end) - start, the walk total + (end - start): rounding only
    assert all(abs(got[k] - ref[k]) <= 1e-12 * ref[k] for k in ref)


def test_the_pure_python_path_gives_the_same_arrays_and_walk():
    hw = load_hardware("ascend910c")
    g = build_graph(make_plan(hw, AttentionShape(8, 2, 8192), default_schedule(hw, "amla"))).graph
    frozen = freeze(g)
    fast, pure = run_events(g, frozen), run_events(g, frozen, compiled=False)
    for a, b in zip(dataclasses.astuple(fast), dataclasses.astuple(pure), strict=True):
        assert np.array_equal(a, b)
    w1, w2 = walk(fast, g, frozen), walk(pure, g, frozen, compiled=False)
    for a, b in zip(dataclasses.astuple(w1), dataclasses.astuple(w2), strict=True):
        assert np.array_equal(a, b)


def test_a_small_run_does_not_load_numba_and_a_long_one_does():
    code = (
        "import sys\n"
        "from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, run\n"
        "from amla_numerics.pipeline import eventloop\n"
        "hw = load_hardware('ascend910c')\n"
        "args = (hw, AttentionShape(128, 2, 16384), default_schedule(hw, 'amla'))\n"
        "small = run(*args)\n"
        "print('numba' in sys.modules)\n"
        "eventloop.COMPILE_AFTER_OPS = 0\n"
        "print(run(*args) == small, 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]
