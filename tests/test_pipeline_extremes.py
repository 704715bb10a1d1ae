"""Bounds over the parameter box: vertices + pattern search, the calibration as a constraint."""

from __future__ import annotations

import itertools

import pytest

from amla_numerics.pipeline.calibrate import ANCHORS, anchor_value
from amla_numerics.pipeline.extremes import FIT_RTOL, LEVELS, Calibration, box_bounds
from amla_numerics.pipeline.hardware import Hardware, load_hardware
from amla_numerics.pipeline.sensitivity import latin_hypercube

HW = load_hardware("ascend910c")
RANGES = dict(sorted(HW.ranges.items()))


def _unit(h: Hardware, k: str) -> float:
    lo, hi = RANGES[k]
    return (h[k] - lo) / (hi - lo)


def _rugged(h: Hardware) -> float:
    """A figure with interactions between parameters (its max is at a vertex)."""
    u = [_unit(h, k) for k in RANGES]
    return sum((i + 1) * x for i, x in enumerate(u)) + 5.0 * u[0] * u[-1] - 3.0 * u[1] * u[2]


def test_the_max_is_at_least_every_vertex_and_every_sample() -> None:
    b = box_bounds(HW, _rugged, calibrate=False)
    vertices = [
        HW.replace(**dict(zip(RANGES, ends, strict=True)))
        for ends in itertools.product(*RANGES.values())
    ]
    samples = [HW.replace(**p) for p in latin_hypercube(RANGES, 64, seed=5)]
    values = [_rugged(h) for h in vertices + samples]
    assert b.high.value >= max(values)
    assert b.low.value <= min(values)
    assert _rugged(HW.replace(**b.high.point)) == b.high.value  # the point reaches the end


def test_an_optimum_inside_the_box_is_found() -> None:
    target = {k: 0.75 if i % 2 else 0.25 for i, k in enumerate(RANGES)}  # on the search grid
    assert all((t * 2**LEVELS) % 1 == 0 for t in target.values())

    def bowl(h: Hardware) -> float:
        return -sum((_unit(h, k) - t) ** 2 for k, t in target.items())

    b = box_bounds(HW, bowl, calibrate=False)
    assert b.high.value == 0.0
    assert {k: _unit(HW.replace(**b.high.point), k) for k in RANGES} == target


def test_the_ends_do_not_depend_on_anything_but_the_box() -> None:
    a, b = box_bounds(HW, _rugged, calibrate=False), box_bounds(HW, _rugged, calibrate=False)
    assert a == b


@pytest.mark.slow
def test_a_point_that_cannot_reach_its_anchor_is_excluded_and_others_refit() -> None:
    cal = Calibration(HW)
    assert cal.field == "mmad_overhead_cycles"
    low_l2 = {k: float(HW[k]) for k in RANGES} | {"l2_chip_gbps": RANGES["l2_chip_gbps"][0]}
    assert cal.fit(low_l2) is None  # even no overhead misses 614 TFLOPS
    h = cal.fit({k: float(HW[k]) for k in RANGES} | {"launch_us": RANGES["launch_us"][1]})
    assert h is not None and h["mmad_overhead_cycles"] < HW["mmad_overhead_cycles"]
    a = ANCHORS["amla_614"]
    assert abs(anchor_value(a, h) / a.target - 1) <= 2 * FIT_RTOL


def test_a_fit_at_its_bound_keeps_the_bound_where_it_misses_no_more_than_shipped() -> None:
    h800 = load_hardware("h800_sxm5")
    cal = Calibration(h800)
    assert cal.field == "block_overhead_cycles" and h800["block_overhead_cycles"] == 0.0
    nominal = {k: float(h800[k]) for k in h800.ranges}
    assert cal.shipped_miss > FIT_RTOL  # 660 TFLOPS is out of reach at zero overhead
    h = cal.fit(nominal)
    assert h is not None and h["block_overhead_cycles"] == 0.0
