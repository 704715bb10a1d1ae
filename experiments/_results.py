"""Shared by the experiment scripts: the results folder and the CSV of a list of records."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["results_dir", "write_csv"]


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
