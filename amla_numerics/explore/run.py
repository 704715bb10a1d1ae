"""Run the design space: per point its closed-form conditions, bound, error and throughput.

:func:`explore` takes a :class:`~amla_numerics.explore.space.Grid` and a
:class:`~amla_numerics.explore.space.Measure` and returns an :class:`ExploreResult`:

* ``conditions``: :func:`~amla_numerics.explore.limits.conditions` on the workload's
  ``N`` and ``max |V|`` (the closed forms);
* ``bound``: the largest a priori bound (:mod:`amla_numerics.analysis.bounds`; split runs:
  :func:`amla_numerics.analysis.bounds.split_bound`) over the elements, divided by the element's
  ``sum_k p_k |v_k|`` (the condition-aware scale of
  :func:`~amla_numerics.analysis.metrics.magnitude_scale`), worst over workloads and seeds;
* ``error``: per seed the worst (over the workloads) of the largest condition-aware error
  ``|out - ref| / sum_k p_k |v_k|`` (``ref``: the emulator's float64 ``naive`` path under
  the ``"exact"`` policy, 1e-16 against errors of 1e-8 and more), elements that an
  integer-add hazard turned to garbage left out and counted; its geometric mean over the
  seeds with the Student t 95 % interval of the mean log error (:func:`t_interval` with
  ``log=True``: positive, asymmetric), and per workload the same;
* counts: P elements the cast saturated, integer-add hazards (garbage and FP32 overflow),
  clamped elements, all summed over workloads and seeds;
* ``rescale_prob``: for the stale-max variants, the measured fraction of (block, row group)
  steps that rescale (``flash.rescale_probability``, groups of
  ``gcd(rows, pipeline.rescale.rows_per_decision())`` rows), handed to the pipeline;
* ``tflops`` (the pipeline's :func:`~amla_numerics.pipeline.evaluate`) on the MLA decode
  shape of the :class:`Measure`, with ``Measure(bounds=True)`` its bounds over the hardware
  file's unsourced ranges (``tflops_lo``, ``tflops_hi``; else both the nominal value);
  None with the pipeline's reason where the schedule does not fit.

Numerics are computed once per distinct numerical design (points on two chips with the same
block share them), throughput once per distinct costed design.

Examples
--------
>>> from amla_numerics.explore.space import Grid, Measure
>>> g = Grid(variants=("amla", "skip_scale"), p_casts=("e4m3",))
>>> m = Measure(workloads=("mla",), seeds=2, rows=2, kv_len=256, throughput=False)
>>> r = explore(g, m)
>>> [(p.point.variant, p.conditions.saturation_free, p.saturations) for p in r.points]
[('amla', True, 0), ('skip_scale', True, 0)]
>>> r.points[0].error.n, r.points[0].error.lo <= r.points[0].error.mean <= r.points[0].error.hi
(2, True)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from amla_numerics import flash
from amla_numerics.analysis.bounds import (
    a_priori_bound,
    bound_inputs,
    elementwise_bound,
    split_bound,
)
from amla_numerics.analysis.metrics import U_FP32, condition_aware, magnitude_scale
from amla_numerics.analysis.sinks import sink_workload
from amla_numerics.analysis.workloads import Workload, make_workload
from amla_numerics.explore.limits import Conditions, conditions, tau_max
from amla_numerics.explore.space import SINK_WORKLOAD, DesignPoint, Grid, Measure
from amla_numerics.pipeline import default_schedule, evaluate, load_hardware
from amla_numerics.pipeline.rescale import CONDITIONAL_VARIANTS, rows_per_decision
from amla_numerics.variants import default_tau

__all__ = ["ExploreResult", "Interval", "PointResult", "explore", "limits_table", "t_interval"]

#: Confidence level of every interval.
CONFIDENCE: float = 0.95
_SINK_DELTA = 12.0


@dataclass(frozen=True)
class Interval:
    """A mean with its Student t interval over ``n`` values (``lo = hi = mean`` for n = 1)."""

    mean: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        """A JSON-ready dict (non-finite values as None)."""
        return {"mean": _num(self.mean), "lo": _num(self.lo), "hi": _num(self.hi), "n": self.n}


def t_interval(
    values: Sequence[float], confidence: float = CONFIDENCE, *, log: bool = False
) -> Interval:
    """Mean and two-sided Student t interval of ``values`` (inf if any is not finite).

    With ``log=True`` (positive values: errors) the interval is the t interval of the mean
    of ``ln(values)``, mapped back: a geometric mean with a positive, asymmetric interval.

    Examples
    --------
    >>> iv = t_interval([1.0, 2.0, 3.0])
    >>> iv.mean, round(iv.hi - iv.mean, 4)  # t_{0.975, 2} = 4.3027, s = 1, n = 3
    (2.0, 2.4841)
    >>> g = t_interval([1e-3, 1e-3, 1e-3], log=True)
    >>> round(g.mean, 12), round(g.lo, 12), round(g.hi, 12)
    (0.001, 0.001, 0.001)
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("argument 'values' must not be empty")
    if not np.all(np.isfinite(x)):
        return Interval(math.inf, math.inf, math.inf, int(x.size))
    if log:
        if np.any(x <= 0):
            raise ValueError("argument 'values' must be positive with log=True")
        iv = t_interval(np.log(x).tolist(), confidence)
        return Interval(math.exp(iv.mean), math.exp(iv.lo), math.exp(iv.hi), iv.n)
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))


def _error_interval(values: Sequence[float]) -> Interval:
    """Geometric-mean t interval of positive errors (arithmetic if one is 0)."""
    pos = all(v > 0 for v in values)
    return t_interval(values, log=pos and all(math.isfinite(v) for v in values))


@dataclass(frozen=True)
class PointResult:
    """Everything measured and derived for one :class:`DesignPoint` (module docstring)."""

    point: DesignPoint
    conditions: Conditions
    bound: float
    error: Interval
    errors: dict[str, Interval]
    saturations: int
    hazards: int
    clamps: int
    rescale_prob: float | None
    tflops: float | None = None
    tflops_lo: float | None = None
    tflops_hi: float | None = None
    bound_engine: str | None = None
    throughput_note: str | None = None

    @property
    def hazard_free(self) -> bool:
        """Closed-form conditions met and nothing counted in the measurement."""
        return self.conditions.hazard_free and self.saturations == 0 and self.hazards == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            **self.point.to_dict(),
            "label": self.point.label,
            "conditions": self.conditions.to_dict(),
            "bound": _num(self.bound),
            "error": self.error.to_dict(),
            "errors": {k: v.to_dict() for k, v in self.errors.items()},
            "saturations": self.saturations,
            "hazards": self.hazards,
            "clamps": self.clamps,
            "hazard_free": self.hazard_free,
            "rescale_prob": _num(self.rescale_prob),
            "tflops": _num(self.tflops),
            "tflops_lo": _num(self.tflops_lo),
            "tflops_hi": _num(self.tflops_hi),
            "bound_engine": self.bound_engine,
            "throughput_note": self.throughput_note,
        }


@dataclass(frozen=True)
class ExploreResult:
    """The explored grid: one :class:`PointResult` per point and the saturation limits."""

    grid: Grid
    measure: Measure
    points: tuple[PointResult, ...]
    limits: tuple[dict[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """``{"grid", "measure", "confidence", "points", "limits"}``, JSON-ready."""
        g = {k: getattr(self.grid, k) for k in self.grid.__dataclass_fields__}
        m = {k: getattr(self.measure, k) for k in self.measure.__dataclass_fields__}
        return {
            "grid": g,
            "measure": m,
            "confidence": CONFIDENCE,
            "points": [p.to_dict() for p in self.points],
            "limits": list(self.limits),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    def table(self) -> str:
        """One line per point: design, closed-form verdict, bound, error interval, counts,
        throughput interval."""
        head = (
            f"{'design':<58} {'sat-free':>8} {'tau_max':>8} {'bound':>9} "
            f"{'error mean [95% CI]':>30} {'sat':>6} {'haz':>5} {'p':>5} {'TFLOPS [range]':>24}"
        )
        lines = [head, "-" * len(head)]
        for r in self.points:
            c = r.conditions
            tm = "-" if c.tau_max is None else f"{c.tau_max:.3f}"
            if c.tau_units is not None and c.tau_max is None:
                tm = "none"
            err = f"{_g(r.error.mean)} [{_g(r.error.lo)}, {_g(r.error.hi)}]"
            p = "-" if r.rescale_prob is None else f"{r.rescale_prob:.2f}"
            if r.tflops is None:
                tp = "-" if r.throughput_note is None else "n/a"
            else:
                tp = f"{r.tflops:.0f} [{_g0(r.tflops_lo)}, {_g0(r.tflops_hi)}]"
            lines.append(
                f"{r.point.label:<58} {'yes' if c.saturation_free else 'NO':>8} {tm:>8} "
                f"{_g(r.bound):>9} {err:>30} {r.saturations:>6} {r.hazards:>5} {p:>5} {tp:>24}"
            )
        return "\n".join(lines)


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _g0(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def limits_table(grid: Grid) -> tuple[dict[str, Any], ...]:
    """For each P cast format and static scale of ``grid``, the largest saturation-free
    threshold in log2 units (``lazy``, ``fa4``) and in nats (``skip_scale``).

    Examples
    --------
    >>> rows = limits_table(Grid(p_casts=("e4m3",), p_scales=(256.0,)))
    >>> [(r["tau_units"], round(r["tau_max"], 3)) for r in rows]
    [('log2', 0.858), ('ln', 0.595)]
    """
    rows = []
    for pc in grid.p_casts:
        rounding = "rna" if pc == "bf16" else "rne"
        for s in grid.p_scales:
            for units in ("log2", "ln"):
                rows.append(
                    {
                        "p_cast": pc,
                        "p_scale": float(s),
                        "tau_units": units,
                        "tau_max": tau_max(pc, rounding, float(s), units),
                    }
                )
    return tuple(rows)


class _Inputs:
    """One workload and seed: the inputs, the float64 reference and the bound statistics."""

    def __init__(self, name: str, seed: int, m: Measure):
        w: Workload
        if name == SINK_WORKLOAD:
            w = sink_workload(
                _SINK_DELTA, head_dim=m.head_dim, kv_len=m.kv_len, rows=m.rows, seed=seed
            )
        else:
            w = make_workload(name, head_dim=m.head_dim, kv_len=m.kv_len, rows=m.rows, seed=seed)
        self.w = w
        with np.errstate(all="ignore"):
            self.ref = flash.attention(
                w.q, w.k, w.v, "naive", scale=w.scale, mask=w.mask, policy="exact"
            ).out
        self.mag = magnitude_scale(w.q, w.k, w.v, w.scale, mask=w.mask)
        self.valid = (self.mag > 0) & np.isfinite(self.ref)
        self.v_max = float(np.max(np.abs(np.asarray(w.v, dtype=np.float64))))
        self._binputs: Any = None

    def binputs(self) -> Any:
        if self._binputs is None:
            w = self.w
            self._binputs = bound_inputs(w.q, w.k, w.v, w.scale, mask=w.mask)
        return self._binputs


def _block(point: DesignPoint) -> int:
    if point.block_n is not None:
        return point.block_n
    return default_schedule(load_hardware(point.hardware), point.pipeline_variant).kv_block


def _numerics(point: DesignPoint, block: int, inputs: dict, m: Measure) -> dict[str, Any]:
    pol = point.policy()
    tau = point.tau if point.tau is not None else default_tau(point.variant)
    per_seed: dict[int, list[float]] = {}
    per_wl: dict[str, list[float]] = {}
    bound = 0.0
    sat = haz = clamps = 0
    probs: list[float] = []
    group = math.gcd(m.rows, rows_per_decision())
    for (name, seed), x in inputs.items():
        w = x.w
        splits = None if point.splits == 1 else point.splits
        with np.errstate(all="ignore"):
            res = flash.attention(
                w.q,
                w.k,
                w.v,
                point.variant,
                scale=w.scale,
                mask=w.mask,
                block_n=block,
                policy=pol,
                tau=tau,
                splits=splits,
                trace=splits is None,
            )
        junk = res.garbage_mask()
        ok = x.valid & ~junk
        out = res.out.astype(np.float64)
        with np.errstate(all="ignore"):
            rel = condition_aware(np.abs(out - x.ref), x.mag) * U_FP32
        err = float(np.max(np.where(ok, np.where(np.isfinite(rel), rel, np.inf), 0.0)))
        per_seed.setdefault(seed, []).append(err)
        per_wl.setdefault(name, []).append(err)
        hz = res.hazards
        haz += sum(v for k, v in hz.items() if k not in ("ok", "clamp"))
        clamps += hz.get("clamp", 0)
        if res.trace is not None:
            if res.trace.p_saturate is not None:
                sat += int(res.trace.p_saturate.sum())
            if point.variant in CONDITIONAL_VARIANTS and res.trace.rescaled.shape[0] > 1:
                probs.append(res.trace.rescale_prob(group))
        elif res.splits is not None:
            for tr in res.splits.traces:
                if tr is not None and tr.p_saturate is not None:
                    sat += int(tr.p_saturate.sum())
        bound = max(bound, _bound_ratio(point, block, x, m, tau))
    worst = [max(v) for v in per_seed.values()]
    return {
        "error": _error_interval(worst),
        "errors": {k: _error_interval(v) for k, v in per_wl.items()},
        "bound": bound,
        "saturations": sat,
        "hazards": haz,
        "clamps": clamps,
        "rescale_prob": float(np.mean(probs)) if probs else None,
    }


def _bound_ratio(point: DesignPoint, block: int, x: Any, m: Measure, tau: float) -> float:
    """The largest a priori bound over the valid elements of one input set ``x``, divided
    by the element's condition-aware scale (split runs: the split bound)."""
    pol = point.policy()
    splits = None if point.splits == 1 else point.splits
    w = x.w
    if splits is None:
        b = a_priori_bound(
            point.variant,
            head_dim=m.head_dim,
            kv_len=m.kv_len,
            block_n=block,
            tau=tau,
            policy=pol,
        )
        eb = elementwise_bound(b, x.binputs())
    else:
        eb = split_bound(  # type: ignore[assignment]
            point.variant,
            w.q,
            w.k,
            w.v,
            w.scale,
            splits=splits,
            block_n=block,
            tau=tau,
            policy=pol,
            mask=w.mask,
        )
    with np.errstate(all="ignore"):
        ratio = np.where(x.valid, eb / x.mag, 0.0)
    return float(np.max(ratio))


def _throughput(point: DesignPoint, prob: float | None, m: Measure) -> dict[str, Any]:
    try:
        res = evaluate(
            point.hardware,
            point.pipeline_variant,
            batch=m.batch,
            q_len=m.q_len,
            kv_len=m.tp_kv_len,
            block_n=point.block_n,
            splits=point.splits,
            rescale_prob=prob if point.variant in CONDITIONAL_VARIANTS else None,
            bounds=m.bounds,
        )
    except ValueError as exc:
        return {"throughput_note": str(exc)}
    lo, hi = res.tflops_range if res.tflops_range is not None else (res.tflops, res.tflops)
    return {
        "tflops": float(res.tflops),
        "tflops_lo": float(lo),
        "tflops_hi": float(hi),
        "bound_engine": res.bound,
    }


def explore(grid: Grid, measure: Measure | None = None) -> ExploreResult:
    """Derive, measure and cost every point of ``grid`` (see the module docstring).

    Parameters
    ----------
    grid : Grid
        The design axes.
    measure : Measure, optional
        Workloads, seeds, emulated and modelled shapes (default :class:`Measure`).

    Returns
    -------
    ExploreResult
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"argument 'grid' must be a Grid, got {type(grid).__name__}")
    m = Measure() if measure is None else measure
    if not isinstance(m, Measure):
        raise TypeError(f"argument 'measure' must be a Measure, got {type(m).__name__}")
    inputs = {(name, s): _Inputs(name, s, m) for name in m.workloads for s in range(m.seeds)}
    kv = m.kv_len
    v_max = max(x.v_max for x in inputs.values())
    numerics: dict[tuple, dict[str, Any]] = {}
    costed: dict[tuple, dict[str, Any]] = {}
    out = []
    for point in grid.points():
        block = _block(point)
        key = (
            point.variant,
            point.tau,
            point.p_cast,
            point.p_scale,
            point.accumulator,
            block,
            point.splits,
        )
        if key not in numerics:
            numerics[key] = _numerics(point, block, inputs, m)
        num = numerics[key]
        cond = conditions(
            point.variant,
            point.tau,
            point.p_cast,
            point.policy().p_cast_rounding,
            point.p_scale,
            kv_len=kv,
            v_max=v_max,
            dn_clamp=point.policy().dn_clamp,
        )
        tp: dict[str, Any] = {}
        if m.throughput:
            prob = num["rescale_prob"]
            tkey = (point.hardware, point.pipeline_variant, point.block_n, point.splits, prob)
            if tkey not in costed:
                costed[tkey] = _throughput(point, prob, m)
            tp = costed[tkey]
        out.append(PointResult(point=point, conditions=cond, **num, **tp))
    return ExploreResult(grid, m, tuple(out), limits_table(grid))
