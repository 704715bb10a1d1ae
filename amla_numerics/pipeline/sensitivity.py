"""Uncertainty of a modelled figure over the unsourced parameters' plausible ranges.

Every hardware field without a public source carries ``range = [lo, hi]`` in its TOML
(:attr:`~amla_numerics.pipeline.hardware.Hardware.ranges`). :func:`tornado` moves one
parameter at a time to each end of its range (the others at their values) and reports
the swing of the kernel time; :func:`interval` draws a Latin hypercube over all of them
jointly (plus the nominal point and every one-at-a-time end, so the interval contains the
tornado) and returns the result with ``tflops_range``, ``time_us_range`` and
``utilization_range``. The fitted calibration constants are held at their fitted values
(a refit per sample would hide the parameters' effect in the constant).

:func:`paired_gap` compares two variants on the SAME samples (common random numbers), so
"A is X % faster than B" comes with the interval of X, not the difference of two intervals.

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware
>>> hw = load_hardware("h800_sxm5")
>>> r = interval(hw, AttentionShape(8, 1, 2048), default_schedule(hw, "fa_fp32"), samples=4)
>>> lo, hi = r.tflops_range
>>> lo <= r.tflops <= hi
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from amla_numerics.pipeline.hardware import Hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.schedule import Schedule
from amla_numerics.pipeline.shape import AttentionShape

__all__ = ["Swing", "interval", "latin_hypercube", "paired_gap", "tornado"]


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


def _points(hw: Hardware, samples: int, seed: int) -> list[dict[str, float]]:
    ends = [{k: v} for k, (lo, hi) in sorted(hw.ranges.items()) for v in (lo, hi)]
    return ends + latin_hypercube(dict(hw.ranges), samples, seed)


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
    samples: int = 16,
    seed: int = 0,
    nominal: PipelineResult | None = None,
    ends: bool = False,
    swings: Sequence[Swing] = (),
) -> PipelineResult:
    """The nominal result with ``tflops_range``, ``time_us_range``, ``utilization_range``.

    Evaluated at the nominal point and at ``samples`` Latin-hypercube points over all
    ranged parameters jointly; with ``ends`` also at both ends of every parameter (the
    tornado's points, so the interval contains the one-at-a-time swings), or with the
    times of an already computed :func:`tornado` (``swings``).
    """
    _check_samples(samples)
    nominal = nominal or run(hw, wl, sch)  # type: ignore[assignment]
    assert isinstance(nominal, PipelineResult)
    pts = _points(hw, samples, seed) if ends else latin_hypercube(dict(hw.ranges), samples, seed)
    times = [nominal.time_us] + [_time(hw.replace(**p), wl, sch) for p in pts]
    times += [t for s in swings for t in (s.time_lo_us, s.time_hi_us)]
    lo, hi = min(times), max(times)
    tf = (wl.flops / hi * 1e-6, wl.flops / lo * 1e-6)
    peak = nominal.peak_tflops
    return dataclasses.replace(
        nominal,
        tflops_range=tf,
        time_us_range=(lo, hi),
        utilization_range=(tf[0] / peak, tf[1] / peak),
    )


def paired_gap(
    hw: Hardware,
    wl: AttentionShape,
    schedules: Sequence[Schedule],
    *,
    samples: int = 16,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Time of each schedule relative to the first, on common parameter samples.

    Returns schedule rescale name -> (nominal, lo, hi) of ``time / time_first - 1`` over
    the nominal point and ``samples`` Latin-hypercube points
    (positive: slower than the first; e.g. fa_fp32 vs amla: "AMLA is X % faster").

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
        out[s.rescale] = (float(rel[0]), float(rel.min()), float(rel.max()))
    return out
