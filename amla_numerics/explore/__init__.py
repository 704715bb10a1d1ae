"""The design-space explorer: every rescaling design's hazards, bound, error and throughput.

:mod:`.space` (the grid of designs and the measurement setup), :mod:`.limits` (the closed-form
hazard-free conditions), :mod:`.run` (:func:`explore`: derive, measure, cost) and
:mod:`.plot` (the Pareto picture); the CLI is ``amla-numerics explore``
(:mod:`amla_numerics.cli.explore`).

Examples
--------
>>> from amla_numerics.explore import Grid, Measure, explore
>>> r = explore(Grid(variants=("fa_fp32",)), Measure(workloads=("mla",), seeds=1, rows=2,
...             kv_len=128, throughput=False))
>>> len(r.points), r.points[0].hazard_free
(1, True)
"""

from amla_numerics.explore.limits import Conditions, conditions, overflow_threshold, tau_max
from amla_numerics.explore.run import ExploreResult, Interval, PointResult, explore, t_interval
from amla_numerics.explore.space import DesignPoint, Grid, Measure

__all__ = [
    "Conditions",
    "DesignPoint",
    "ExploreResult",
    "Grid",
    "Interval",
    "Measure",
    "PointResult",
    "conditions",
    "explore",
    "overflow_threshold",
    "t_interval",
    "tau_max",
]
