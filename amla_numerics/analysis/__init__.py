"""Error analysis: metrics, a priori bounds, workloads, the report grid, ULP budgets, plots."""

__all__: list[str] = []
