"""The report's files: ``report.json``, ``report.md`` and the PNG plots.

Downstream of :mod:`~amla_numerics.analysis.report` (the measurement),
:mod:`~amla_numerics.analysis.render` (text) and :mod:`~amla_numerics.analysis.plots`
(pictures), so that none of those imports another's consumer.
"""

from __future__ import annotations

from pathlib import Path

from amla_numerics.analysis.render import render
from amla_numerics.analysis.report import Report

__all__ = ["write_outputs"]


def write_outputs(report: Report, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (with ``plots``) the PNG plots.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, style in (("report.json", "json"), ("report.md", "markdown")):
        path = out_dir / name
        path.write_text(render(report, style))
        written.append(path)
    if plots:
        from amla_numerics.analysis import plots as plotting

        written.extend(plotting.save_report_plots(report, out_dir))
    return written
