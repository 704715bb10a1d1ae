"""Uncertainty of a modelled figure over the unsourced parameters' plausible ranges.

Every hardware field without a public source carries ``range = [lo, hi]`` in its TOML
(:attr:`~amla_numerics.pipeline.hardware.Hardware.ranges`). :func:`tornado` moves one
parameter at a time to each end of its range (the others at their values, the fitted
constants held) and reports the swing of the kernel time. :func:`interval` returns the
result with ``tflops_range``, ``time_us_range`` and ``utilization_range`` whose ends are
searched over the whole box (:func:`~amla_numerics.pipeline.extremes.box_bounds`: vertices
plus a pattern search, the anchored constant re-fitted at every point, points that cannot
reproduce their anchor excluded), with the parameter values that reach each end
(``range_points``) and how they were found (``range_note``).

:func:`gap_bounds` does the same for "A is X % faster than B" (both variants at the SAME
parameter point). The Latin hypercube (:func:`latin_hypercube`, :func:`sampled_range`,
:func:`paired_gap`) is kept as a density view only: where samples fall, never an end.

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware
>>> hw = load_hardware("h800_sxm5")
>>> r = interval(hw, AttentionShape(2, 1, 512), default_schedule(hw, "fa_fp32"))
>>> lo, hi = r.tflops_range
>>> lo <= r.tflops <= hi, sorted(r.range_points)
(True, ['fastest', 'slowest'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from amla_numerics.pipeline.extremes import BoxBounds, Calibration, box_bounds
from amla_numerics.pipeline.hardware import Hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.schedule import Schedule
from amla_numerics.pipeline.shape import AttentionShape

__all__ = [
    "Swing",
    "gap_bounds",
    "interval",
    "latin_hypercube",
    "paired_gap",
    "sampled_range",
    "tornado",
]


@dataclasses.dataclass(frozen=True)
class Swing:
    """One parameter's one-at-a-time effect: kernel time at its low and high end."""

    name: str
    lo: float
    hi: float
    time_lo_us: float
    time_hi_us: float
    source: str

    @property
    def swing(self) -> float:
        """|time(hi) - time(lo)| in microseconds."""
        return abs(self.time_hi_us - self.time_lo_us)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (with ``swing_us``)."""
        return {**dataclasses.asdict(self), "swing_us": self.swing}


def _check_samples(samples: object) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    return samples


def latin_hypercube(
    ranges: dict[str, tuple[float, float]], samples: int, seed: int = 0
) -> list[dict[str, float]]:
    """``samples`` points, one per stratum of every parameter's range (seeded).

    Examples
    --------
    >>> pts = latin_hypercube({"a": (0.0, 1.0)}, 4, seed=1)
    >>> sorted(int(p["a"] * 4) for p in pts)
    [0, 1, 2, 3]
    """
    _check_samples(samples)
    rng = np.random.default_rng(seed)
    out: list[dict[str, float]] = [{} for _ in range(samples)]
    for name, (lo, hi) in sorted(ranges.items()):
        u = (rng.permutation(samples) + rng.random(samples)) / samples
        for i in range(samples):
            out[i][name] = float(lo + (hi - lo) * u[i])
    return out


def tornado(hw: Hardware, wl: AttentionShape, sch: Schedule) -> list[Swing]:
    """One-at-a-time swing of the kernel time per ranged parameter, largest first."""
    out = []
    for name, (lo, hi) in hw.ranges.items():
        t = [_time(hw.replace(**{name: v}), wl, sch) for v in (lo, hi)]
        out.append(Swing(name, lo, hi, t[0], t[1], hw.source(name)))
    return sorted(out, key=lambda s: -s.swing)


def _time(hw: Hardware, wl: AttentionShape, sch: Schedule) -> float:
    res = run(hw, wl, sch)
    assert isinstance(res, PipelineResult)
    return res.time_us


def interval(
    hw: Hardware,
    wl: AttentionShape,
    sch: Schedule,
    *,
    nominal: PipelineResult | None = None,
    calibrate: bool = True,
    calibration: Calibration | None = None,
) -> PipelineResult:
    """The nominal result with ``tflops_range``, ``time_us_range``, ``utilization_range``
    bounded over the parameter box, ``range_points`` (the parameters at the fastest and
    the slowest end) and ``range_note``."""
    nominal = nominal or run(hw, wl, sch)  # type: ignore[assignment]
    assert isinstance(nominal, PipelineResult)
    b = box_bounds(hw, lambda h: _time(h, wl, sch), calibrate=calibrate, calibration=calibration)
    lo, hi = b.low.value, b.high.value
    tf = (wl.flops / hi * 1e-6, wl.flops / lo * 1e-6)
    peak = nominal.peak_tflops
    return dataclasses.replace(
        nominal,
        tflops_range=tf,
        time_us_range=(lo, hi),
        utilization_range=(tf[0] / peak, tf[1] / peak),
        range_points=MappingProxyType(
            {"fastest": dict(b.low.point), "slowest": dict(b.high.point)}
        ),
        range_note=b.note(),
    )


def sampled_range(
    hw: Hardware, wl: AttentionShape, sch: Schedule, *, samples: int = 16, seed: int = 0
) -> tuple[float, float]:
    """(min, max) kernel time over ``samples`` Latin-hypercube points: a density view of
    where the parameters put the time, NOT bounds (the ends move with the seed)."""
    _check_samples(samples)
    times = [
        _time(hw.replace(**p), wl, sch) for p in latin_hypercube(dict(hw.ranges), samples, seed)
    ]
    return min(times), max(times)


def gap_bounds(
    hw: Hardware,
    wl: AttentionShape,
    base: Schedule,
    other: Schedule,
    *,
    calibrate: bool = True,
    calibration: Calibration | None = None,
) -> BoxBounds:
    """Bounds of ``time(other) / time(base) - 1`` over the parameter box, both schedules at
    the same point (positive: ``other`` is slower, e.g. base amla, other fa_fp32)."""

    def gap(h: Hardware) -> float:
        return _time(h, wl, other) / _time(h, wl, base) - 1.0

    return box_bounds(hw, gap, calibrate=calibrate, calibration=calibration)


def paired_gap(
    hw: Hardware,
    wl: AttentionShape,
    schedules: Sequence[Schedule],
    *,
    samples: int = 16,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Time of each schedule relative to the first, on common parameter samples.

    Returns schedule variant name -> (nominal, lo, hi) of ``time / time_first - 1`` over
    the nominal point and ``samples`` Latin-hypercube points
    (positive: slower than the first; e.g. fa_fp32 vs amla: "AMLA is X % faster"). A
    density view: the ends move with the seed; :func:`gap_bounds` gives bounds.

    Examples
    --------
    >>> from amla_numerics.pipeline import default_schedule, load_hardware
    >>> hw = load_hardware("h800_sxm5")
    >>> g = paired_gap(hw, AttentionShape(4, 1, 1024),
    ...                [default_schedule(hw, v) for v in ("amla", "fa_fp32")], samples=2)
    >>> g["amla"][0]
    0.0
    """
    _check_samples(samples)
    pts: list[dict[str, float]] = [{}, *latin_hypercube(dict(hw.ranges), samples, seed)]
    table = [[_time(hw.replace(**p), wl, s) for p in pts] for s in schedules]
    base = np.array(table[0])
    out = {}
    for s, row in zip(schedules, table, strict=True):
        rel = np.array(row) / base - 1.0
        out[s.variant] = (float(rel[0]), float(rel.min()), float(rel.max()))
    return out
