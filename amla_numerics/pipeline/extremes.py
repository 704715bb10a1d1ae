"""The ends of a modelled figure over the unsourced parameters' box, with the parameters
that reach them, under the calibration constraint.

Every ranged hardware field spans an interval (:attr:`Hardware.ranges
<amla_numerics.pipeline.hardware.Hardware.ranges>`); together they form a box. Each end of
a figure over the box is searched, deterministically, by

1. every vertex of the box when it has at most :data:`ALL_VERTICES` parameters, else every
   vertex of the :data:`TOP` most influential ones (the largest one-at-a-time swings), the
   others at the end that pushes the figure the searched way;
2. a pattern search from the best point found: each parameter in turn moved by +-step
   (clipped to its range), the step halved when no move improves, down to
   ``range / 2**LEVELS``.

So the reported max is at least the value at every vertex evaluated and at every point the
search visited; the search cannot prove that no interior point is higher, but it follows any
slope the vertices leave (a figure with its optimum inside the box is found: tested).

The calibration is a constraint, not a constant: a hardware file whose constant was fitted
on a published anchor (``mmad_overhead_cycles`` on ``ascend910c``:
:data:`~amla_numerics.pipeline.calibrate.ANCHORS` ``amla_614``) has that constant re-fitted
at every parameter point, so each point reproduces its own anchor; a point where no value of
the constant (>= 0) reaches the anchor contradicts the calibration and is excluded (counted,
and listed by the caller's output).

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, run
>>> hw = load_hardware("h800_sxm5")
>>> wl, sch = AttentionShape(8, 1, 2048), default_schedule(hw, "fa_fp32")
>>> b = box_bounds(hw, lambda h: run(h, wl, sch).time_us, calibrate=False)
>>> b.low.value <= b.nominal <= b.high.value
True
>>> sorted(b.high.point) == sorted(hw.ranges), b.refit
(True, None)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from types import MappingProxyType

from amla_numerics.pipeline.calibrate import ANCHORS, Anchor, anchor_value
from amla_numerics.pipeline.hardware import Hardware

__all__ = [
    "ALL_VERTICES",
    "FIT_RTOL",
    "LEVELS",
    "MOVE_RTOL",
    "PASSES",
    "TOP",
    "BoxBounds",
    "Calibration",
    "Extreme",
    "box_bounds",
]

#: Up to this many ranged parameters, every vertex of the box is evaluated.
ALL_VERTICES: int = 5
#: Otherwise, every vertex of this many most influential parameters.
TOP: int = 4
#: Pattern-search step halvings (the finest step is range / 2**LEVELS).
LEVELS: int = 2
#: Pattern-search passes over every parameter per step size, at most.
PASSES: int = 2
#: A re-fitted constant meets its anchor to this relative deviation (0.06 TFLOPS of 614).
FIT_RTOL: float = 1e-4
#: A pattern-search move must improve the figure by more than this (relative to the figure,
#: or absolute below 1), so that the search does not chase the re-fit's resolution.
MOVE_RTOL: float = 1e-6


@dataclasses.dataclass(frozen=True)
class Extreme:
    """One end of a figure: its value and the parameter point that reaches it.

    ``point`` holds every ranged parameter and, where the calibration applies, the
    re-fitted constant at that point.
    """

    value: float
    point: Mapping[str, float]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"value": self.value, "point": dict(self.point)}


@dataclasses.dataclass(frozen=True)
class BoxBounds:
    """The nominal value and both ends of a figure over the parameter box.

    ``excluded`` counts the evaluated points that contradict the calibration (no value of
    the re-fitted constant reproduces its anchor); ``refit`` names the constant re-fitted
    per point (None: no anchor on this hardware file); ``evaluations``: distinct points.
    """

    nominal: float
    low: Extreme
    high: Extreme
    excluded: int
    refit: str | None
    evaluations: int

    def note(self) -> str:
        """One line saying how the ends were found."""
        cal = (
            f"{self.refit} re-fitted at every point to its anchor, {self.excluded} points "
            "excluded (anchor unreachable)"
            if self.refit
            else "no fitted constant on this hardware file"
        )
        return (
            f"bounds over the parameter box: vertices + pattern search, "
            f"{self.evaluations} points; {cal}"
        )


class Calibration:
    """Re-fits a hardware file's anchored constant at any parameter point (cached).

    The anchor's metric must fall as the constant grows (an overhead). Where even the
    constant 0 misses the anchor, the point keeps 0 (the bound, as
    :func:`~amla_numerics.pipeline.calibrate.fit_constant` does) if it misses by no more
    than the shipped file does (``h800_sxm5``: FlashMLA's 660 TFLOPS is above the model at
    zero overhead), else it is infeasible (:meth:`fit` returns None).
    """

    def __init__(self, hw: Hardware, tol: float = 0.5, *, anchored: bool = True) -> None:
        self.hw = hw
        self.tol = tol
        self.anchor: Anchor | None = None
        self.field: str | None = None
        for a in ANCHORS.values() if anchored else ():
            field = a.role.removeprefix("fit ").strip()
            if (
                a.role.startswith("fit ")
                and a.timing == "kernel"
                and a.hardware == hw.name
                and field not in hw.ranges
                and a.metric == "tflops"
            ):
                self.anchor, self.field = a, field
                break
        self._cache: dict[tuple[float, ...], float | None] = {}
        self._shipped: float | None = None

    def _miss(self, h: Hardware) -> float:
        assert self.anchor is not None
        return anchor_value(self.anchor, h) / self.anchor.target - 1.0

    @property
    def shipped_miss(self) -> float:
        """How far the shipped file misses its anchor (relative; 0 for an interior fit)."""
        if self._shipped is None:
            self._shipped = 0.0 if self.anchor is None else abs(self._miss(self.hw))
        return self._shipped

    def fit(self, point: Mapping[str, float]) -> Hardware | None:
        """``hw`` at ``point`` with the constant re-fitted; None if the anchor is unreachable."""
        base = self.hw.replace(**point)
        if self.anchor is None or self.field is None:
            return base
        key = tuple(point[k] for k in sorted(point))
        if key not in self._cache:
            self._cache[key] = self._fit(base)
        c = self._cache[key]
        return None if c is None else base.replace(**{self.field: c})

    def _fit(self, base: Hardware) -> float | None:
        """Secant steps on the bracketing pair (regula falsi, Illinois), stopping when the
        anchor is met to :data:`FIT_RTOL` or the bracket is narrower than ``tol``."""
        assert self.anchor is not None and self.field is not None
        field = self.field

        def f(x: float) -> float:
            return self._miss(base.replace(**{field: x}))

        c = max(float(self.hw[field]), 1.0)
        fc = f(c)
        if fc > 0:  # too fast: a larger overhead
            lo, f_lo, hi = c, fc, 2.0 * c
            f_hi = f(hi)
            while f_hi > 0:
                lo, f_lo, hi = hi, f_hi, 2.0 * hi
                f_hi = f(hi)
        else:
            lo, f_lo, hi, f_hi = 0.0, f(0.0), c, fc
            if f_lo < 0:  # even no overhead misses the anchor
                return 0.0 if -f_lo <= max(FIT_RTOL, self.shipped_miss) else None
        side = 0
        for _ in range(60):
            if hi - lo <= self.tol:
                break
            x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
            fx = f(x)
            if abs(fx) <= FIT_RTOL:
                return round(x, 1)
            if fx > 0:
                lo, f_lo = x, fx
                if side == 1:
                    f_hi *= 0.5
                side = 1
            else:
                hi, f_hi = x, fx
                if side == -1:
                    f_lo *= 0.5
                side = -1
        return round(0.5 * (lo + hi), 1)


def box_bounds(
    hw: Hardware,
    figure: Callable[[Hardware], float],
    *,
    calibrate: bool = True,
    calibration: Calibration | None = None,
) -> BoxBounds:
    """Both ends of ``figure(hardware)`` over ``hw``'s parameter box (see the module notes).

    Parameters
    ----------
    hw : Hardware
        The description whose ``ranges`` span the box.
    figure : callable
        Hardware -> the figure (e.g. a kernel time or a paired gap).
    calibrate : bool
        Re-fit the anchored constant at every point (exclude points that cannot).
    calibration : Calibration, optional
        A shared :class:`Calibration` of ``hw`` (its re-fits are cached across figures).
    """
    ranges = dict(sorted(hw.ranges.items()))
    names = list(ranges)
    cal = calibration or Calibration(hw, anchored=calibrate)
    nominal_point = {k: float(hw[k]) for k in names}
    values: dict[tuple[float, ...], float | None] = {}

    def value(point: Mapping[str, float]) -> float | None:
        key = tuple(point[k] for k in names)
        if key not in values:
            h = cal.fit(point)
            values[key] = None if h is None else figure(h)
        return values[key]

    nominal = figure(hw)  # the shipped file: its constant was fitted at this point

    # one-at-a-time ends: the influence order and the preferred end of each parameter
    swing: dict[str, tuple[float, float]] = {}
    for k in names:
        lo_v = value({**nominal_point, k: ranges[k][0]})
        hi_v = value({**nominal_point, k: ranges[k][1]})
        swing[k] = (
            nominal if lo_v is None else lo_v,
            nominal if hi_v is None else hi_v,
        )
    order = sorted(names, key=lambda k: -abs(swing[k][1] - swing[k][0]))

    def search(sign: float) -> Extreme:
        def better(a: float | None, b: float | None) -> bool:
            return a is not None and (b is None or sign * (a - b) > MOVE_RTOL * max(abs(b), 1.0))

        top = names if len(names) <= ALL_VERTICES else order[:TOP]
        rest = {
            k: ranges[k][1] if sign * swing[k][1] >= sign * swing[k][0] else ranges[k][0]
            for k in names
            if k not in top
        }
        best, best_v = dict(nominal_point), value(nominal_point)
        for ends in itertools.product(*[ranges[k] for k in top]):
            p = {**rest, **dict(zip(top, ends, strict=True))}
            v = value(p)
            if better(v, best_v):
                best, best_v = p, v
        for level in range(1, LEVELS + 1):
            improved, passes = True, 0
            while improved and passes < PASSES:
                improved, passes = False, passes + 1
                for k in order:
                    lo, hi = ranges[k]
                    step = (hi - lo) / 2**level
                    for x in (best[k] - step, best[k] + step):
                        x = min(max(x, lo), hi)
                        if x == best[k]:
                            continue
                        p = {**best, k: x}
                        v = value(p)
                        if better(v, best_v):
                            best, best_v, improved = p, v, True
        assert best_v is not None, "no parameter point reproduces the calibration anchor"
        h = cal.fit(best)
        point = dict(best)
        if cal.field is not None and h is not None:
            point[cal.field] = float(h[cal.field])
        return Extreme(best_v, MappingProxyType(point))

    low, high = search(-1.0), search(1.0)
    excluded = sum(v is None for v in values.values())
    return BoxBounds(nominal, low, high, excluded, cal.field, len(values))
