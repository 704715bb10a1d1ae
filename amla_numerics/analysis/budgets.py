"""ULP budgets: committed per-case error ceilings that regression tests hold.

A budgets file (TOML) has a ``[meta]`` table (the measurement settings and the margin) and
one ``[[budget]]`` per (variant, head dim, workload, KV length) with ``max_ulp_fp32``, the
largest FP32 ULP error allowed, and optionally ``median_ulp_fp32``, the largest median (the
max is set by the few outputs that nearly cancel, where one FP32 ULP is tiny; the median
tracks the typical element, so a regression in the bulk fails it first). Budgets are set from
measured values with the stated
margin (:func:`budgets_from_records`), so a change that makes any case worse by more than
the margin fails, and loosening a budget is a visible diff of the committed file.

The shipped file ``amla_numerics/data/budgets.toml`` covers a small grid that the test
suite checks; ``amla-numerics check-budgets --budgets FILE`` checks any other.

Examples
--------
>>> text = '''
... [meta]
... rows = 2
... block_n = 128
... seed = 0
... margin = 1.5
... [[budget]]
... variant = "fa_fp32"
... head_dim = 64
... workload = "random"
... kv_len = 256
... max_ulp_fp32 = 1e9
... '''
>>> book = parse_budgets(text)
>>> [r.ok for r in check_budgets(book)]
[True]
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from amla_numerics.analysis.grid import Case, Record, evaluate_case
from amla_numerics.analysis.workloads import WORKLOADS
from amla_numerics.variants import check_variant

__all__ = [
    "Budget",
    "BudgetBook",
    "BudgetResult",
    "budgets_from_records",
    "check_budgets",
    "default_budgets_path",
    "format_budgets",
    "load_budgets",
    "parse_budgets",
    "render_results",
    "update_budgets",
]

#: The comment block written at the top of a regenerated budgets file.
BUDGETS_HEADER = (
    "ULP budgets: measured max and median FP32 ULP errors x the margin below, rounded up to 2\n"
    "significant digits. Regenerate with: amla-numerics check-budgets --update FILE\n"
    "A change that raises a budget must say why in its commit message."
)

_META_KEYS = {"rows": int, "block_n": int, "seed": int, "margin": float}
_BUDGET_KEYS = {
    "variant": str,
    "head_dim": int,
    "workload": str,
    "kv_len": int,
    "max_ulp_fp32": float,
}


@dataclass(frozen=True)
class Budget:
    """The largest FP32 ULP error allowed for one (variant, head dim, workload, KV length)."""

    variant: str
    head_dim: int
    workload: str
    kv_len: int
    max_ulp_fp32: float
    median_ulp_fp32: float | None = None

    @property
    def key(self) -> str:
        return f"{self.variant} d={self.head_dim} {self.workload} N={self.kv_len}"


@dataclass(frozen=True)
class BudgetBook:
    """A parsed budgets file: settings shared by every budget, then the budgets."""

    rows: int
    block_n: int
    seed: int
    margin: float
    budgets: tuple[Budget, ...]


@dataclass(frozen=True)
class BudgetResult:
    """A budget and what was measured for it."""

    budget: Budget
    measured: float
    measured_median: float = math.nan

    @property
    def ok(self) -> bool:
        median = self.budget.median_ulp_fp32
        return self.measured <= self.budget.max_ulp_fp32 and (
            median is None or self.measured_median <= median
        )

    def describe(self) -> str:
        """``key: measured > budget`` for each ceiling exceeded (empty when ok)."""
        b, parts = self.budget, []
        if not self.measured <= b.max_ulp_fp32:
            parts.append(f"max {self.measured:.4g} > {b.max_ulp_fp32:.4g}")
        if b.median_ulp_fp32 is not None and not self.measured_median <= b.median_ulp_fp32:
            parts.append(f"median {self.measured_median:.4g} > {b.median_ulp_fp32:.4g}")
        return f"{b.key}: {', '.join(parts)} FP32 ULP" if parts else ""


def default_budgets_path() -> Path:
    """The budgets file shipped with the package."""
    return Path(str(resources.files("amla_numerics") / "data" / "budgets.toml"))


def load_budgets(path: str | Path | None = None) -> BudgetBook:
    """Read and validate a budgets file (the shipped one by default).

    Raises
    ------
    ValueError
        Unreadable file, TOML syntax error, or a missing/ill-typed field (named).
    """
    path = Path(path) if path is not None else default_budgets_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read budgets file {str(path)!r}: {exc.strerror}") from None
    return parse_budgets(text, source=str(path))


def parse_budgets(text: str, source: str = "<string>") -> BudgetBook:
    """Parse budgets TOML text (see the module docstring for the layout)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"budgets file {source!r} is not valid TOML: {exc}") from None
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise ValueError(f"budgets file {source!r} lacks its [meta] table")
    settings = {k: _field(meta, k, t, f"{source} [meta]") for k, t in _META_KEYS.items()}
    entries = doc.get("budget")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"budgets file {source!r} has no [[budget]] entries")
    budgets = []
    for i, entry in enumerate(entries):
        where = f"{source} budget #{i + 1}"
        values = {k: _field(entry, k, t, where) for k, t in _BUDGET_KEYS.items()}
        try:
            check_variant(values["variant"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if values["workload"] not in WORKLOADS:
            raise ValueError(f"{where}: unknown workload {values['workload']!r}")
        if "median_ulp_fp32" in entry:
            values["median_ulp_fp32"] = _field(entry, "median_ulp_fp32", float, where)
        for key in ("max_ulp_fp32", "median_ulp_fp32"):
            if key in values and (values[key] < 0 or not math.isfinite(values[key])):
                raise ValueError(f"{where}: {key} must be finite and >= 0")
        budgets.append(Budget(**values))
    return BudgetBook(budgets=tuple(budgets), **settings)


def _measure_book(book: BudgetBook, jobs: int) -> list[Record]:
    """One record per budget (budget order), each case measured once."""
    groups: dict[Case, list[Budget]] = {}
    for b in book.budgets:
        case = Case(b.head_dim, b.kv_len, b.workload, book.seed, book.rows, book.block_n)
        groups.setdefault(case, []).append(b)
    cases = list(groups)
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outs = list(pool.map(_measure, cases, [[b.variant for b in groups[c]] for c in cases]))
    else:
        outs = [_measure(c, [b.variant for b in groups[c]]) for c in cases]
    by_key: dict[str, Record] = {}
    for case, recs in zip(cases, outs, strict=True):
        for b, rec in zip(groups[case], recs, strict=True):
            by_key[b.key] = rec
    return [by_key[b.key] for b in book.budgets]


def check_budgets(book: BudgetBook, *, jobs: int = 1) -> list[BudgetResult]:
    """Measure every budgeted case and pair it with its budget (budget order)."""
    records = _measure_book(book, jobs)
    return [
        BudgetResult(b, _worst(r), _median(r)) for b, r in zip(book.budgets, records, strict=True)
    ]


def update_budgets(book: BudgetBook, *, jobs: int = 1) -> BudgetBook:
    """The same budgets re-measured: measured values x ``book.margin`` (see
    :func:`budgets_from_records`); write it with :func:`format_budgets`."""
    records = _measure_book(book, jobs)
    new = tuple(budgets_from_records(records, book.margin))
    return BudgetBook(book.rows, book.block_n, book.seed, book.margin, new)


def render_results(results: list[BudgetResult]) -> str:
    """One line per budget: ``ok``/``OVER``, the key, measured <= budget for max and median."""
    width = max((len(r.budget.key) for r in results), default=0)
    lines = []
    for r in results:
        status = "ok  " if r.ok else "OVER"
        med = r.budget.median_ulp_fp32
        med_txt = "-" if med is None else f"{med:.4g}"
        lines.append(
            f"{status} {r.budget.key:<{width}}  max {r.measured:10.4g} <= "
            f"{r.budget.max_ulp_fp32:10.4g}  median {r.measured_median:10.4g} <= {med_txt:>10}"
        )
    return "\n".join(lines)


def budgets_from_records(records: list[Record], margin: float) -> list[Budget]:
    """Budgets = measured max and median FP32 ULP errors x ``margin``, rounded up to 2
    significant digits."""
    return [
        Budget(
            r.variant,
            r.head_dim,
            r.workload,
            r.kv_len,
            _round_up_2sig(_worst(r) * margin),
            _round_up_2sig(_median(r) * margin),
        )
        for r in records
    ]


def format_budgets(book: BudgetBook, header: str = "") -> str:
    """Serialise a :class:`BudgetBook` as TOML (stable order: the file diffs cleanly)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [
        "[meta]",
        f"rows = {book.rows}",
        f"block_n = {book.block_n}",
        f"seed = {book.seed}",
        f"margin = {book.margin!r}",
    ]
    for b in book.budgets:
        lines += [
            "",
            "[[budget]]",
            f'variant = "{b.variant}"',
            f"head_dim = {b.head_dim}",
            f'workload = "{b.workload}"',
            f"kv_len = {b.kv_len}",
            f"max_ulp_fp32 = {b.max_ulp_fp32!r}",
        ]
        if b.median_ulp_fp32 is not None:
            lines.append(f"median_ulp_fp32 = {b.median_ulp_fp32!r}")
    return "\n".join(lines) + "\n"


def _measure(case: Case, variants: list[str]) -> list[Record]:
    return evaluate_case(case, variants)


def _worst(record: Record) -> float:
    """The budgeted quantity: max FP32 ULP error; a non-finite output counts as infinite."""
    return math.inf if record.metrics.n_nonfinite else record.metrics.max_ulp_fp32


def _median(record: Record) -> float:
    return math.inf if record.metrics.n_nonfinite else record.metrics.median_ulp_fp32


def _round_up_2sig(x: float) -> float:
    if not math.isfinite(x) or x <= 0:
        return x if x == 0 else math.inf
    e = math.floor(math.log10(x)) - 1
    return math.ceil(x / 10.0**e) * 10.0**e


def _field(table: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(table, dict) or key not in table:
        raise ValueError(f"{where}: missing field {key!r}")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: field {key!r} must be {kind.__name__}, got {value!r}")
    return value
