"""Error analysis: metrics, a priori bounds, workloads, the report grid, ULP budgets, plots.

Data flows one way: :mod:`.workloads` (seeded inputs) -> :mod:`.grid` (reference and emulator
per case, one :class:`Record` per variant) -> :mod:`.metrics` and :mod:`.bounds` -> the
:mod:`.report` (its build and JSON), :mod:`.render` (text), :mod:`.plots`, :mod:`.budgets`.

Examples
--------
>>> from amla_numerics import analysis
>>> w = analysis.make_workload("random", head_dim=16, kv_len=64, rows=2)
>>> rec = analysis.evaluate_case(analysis.Case(16, 64, "random", rows=2, block_n=32), ["amla"])[0]
>>> rec.variant, rec.bound_ratio <= 1, rec.n_violations
('amla', True, 0)
"""

import importlib
from typing import Any

from amla_numerics.analysis.boundcheck import BoundCheck, bound_check
from amla_numerics.analysis.bounds import (
    Bound,
    BoundInputs,
    a_priori_bound,
    bound_inputs,
    elementwise_bound,
    softmax_weights,
    split_bound,
)
from amla_numerics.analysis.budgets import (
    BudgetBook,
    Check,
    KernelBudget,
    check_budgets,
    load_budgets,
    update_budgets,
)
from amla_numerics.analysis.grid import Case, Record, evaluate_case, expand_grid, run_grid
from amla_numerics.analysis.metrics import (
    ErrorMetrics,
    condition_aware,
    error_metrics,
    magnitude_scale,
)
from amla_numerics.analysis.render import render
from amla_numerics.analysis.report import Report, ReportConfig, build_report, summarize
from amla_numerics.analysis.workloads import WORKLOADS, Workload, load_workload, make_workload

__all__ = [
    "WORKLOADS",
    "Bound",
    "BoundCheck",
    "BoundInputs",
    "BudgetBook",
    "Case",
    "Check",
    "ErrorMetrics",
    "KernelBudget",
    "Record",
    "Report",
    "ReportConfig",
    "Workload",
    "a_priori_bound",
    "bound_check",
    "bound_inputs",
    "build_report",
    "check_budgets",
    "condition_aware",
    "elementwise_bound",
    "error_metrics",
    "evaluate_case",
    "expand_grid",
    "load_budgets",
    "load_workload",
    "magnitude_scale",
    "make_workload",
    "plot_block_trace",
    "plot_cond_distribution",
    "plot_error_scatter",
    "plot_error_vs",
    "plot_error_vs_c",
    "plot_pareto",
    "plot_ulp_distribution",
    "render",
    "run_grid",
    "save_report_plots",
    "softmax_weights",
    "split_bound",
    "summarize",
    "update_budgets",
    "write_outputs",
]

#: Names whose modules import matplotlib: loaded on first access, so that importing the
#: analysis (and :mod:`amla_numerics.testing`, which uses it) does not pay for matplotlib.
_LAZY = {
    "plot_block_trace": "plots",
    "plot_cond_distribution": "plots",
    "plot_error_scatter": "plots",
    "plot_error_vs": "plots",
    "plot_error_vs_c": "plots",
    "plot_pareto": "plots",
    "plot_ulp_distribution": "plots",
    "save_report_plots": "plots",
    "write_outputs": "outputs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"amla_numerics.analysis.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'amla_numerics.analysis' has no attribute {name!r}")
