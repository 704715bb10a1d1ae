"""Shared by the experiment scripts: the command line, the results folder, the CSV, the timing."""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["experiment_main", "results_dir", "write_csv"]


def results_dir(out: str) -> Path:
    """``out`` as a folder that exists (docs/figures by default in every script)."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    """One row per record, the columns in the first record's key order."""
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(records[0]))
        wr.writeheader()
        wr.writerows(records)


def experiment_main(
    argv: list[str] | None,
    *,
    doc: str,
    name: str,
    quick_help: str,
    run: Callable[[bool], list[dict[str, Any]]],
    plot: Callable[[list[dict[str, Any]], Path], None],
) -> tuple[list[dict[str, Any]], Path]:
    """Parse ``--out``/``--quick``, run (``run(quick)``), write ``NAME.csv`` and ``NAME.png`` in
    the results folder and print how long it took; returns the records and the folder."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    args = ap.parse_args(argv)
    out = results_dir(args.out)
    t0 = time.perf_counter()
    records = run(args.quick)
    write_csv(records, out / f"{name}.csv")
    plot(records, out / f"{name}.png")
    print(f"{len(records)} runs in {time.perf_counter() - t0:.1f} s -> {out}")
    return records, out
