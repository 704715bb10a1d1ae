"""What the simulated core did, for eyes: a Chrome trace (Perfetto) and a Gantt plot.

Every operation of a :class:`~amla_numerics.pipeline.des.SimResult` becomes a complete
event (``"ph": "X"``) on the thread of its pipe, with times in microseconds; the
Gantt plot draws the same bars with matplotlib's object API (no pyplot state, Agg).

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, run
>>> hw = load_hardware("ascend910c")
>>> res, sim = run(hw, AttentionShape(1, 2, 1024), default_schedule(hw), keep_sim=True)
>>> doc = chrome_trace(sim, clock_ghz=1.8)
>>> ev = [e for e in doc["traceEvents"] if e["ph"] == "X"]
>>> len(ev) == len(sim.graph), sorted(ev[0])
(True, ['args', 'cat', 'dur', 'name', 'ph', 'pid', 'tid', 'ts'])
"""

from __future__ import annotations

import json
import os
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from amla_numerics.pipeline.des import SimResult

__all__ = ["chrome_trace", "gantt_figure", "write_gantt", "write_trace"]

#: Stage (first word of an op label) -> (description, colour).
STAGES: dict[str, tuple[str, str]] = {
    "Q": ("Q load", "#7f7f7f"),
    "C1": ("C1: S = Q K^T", "#1f77b4"),
    "V1": ("V1: softmax, A", "#2ca02c"),
    "R": ("rescale O", "#d62728"),
    "U": ("O = O x s + partial", "#8c564b"),
    "C2": ("C2: O += A V", "#ff7f0e"),
    "V2": ("V2: normalise", "#9467bd"),
    "KV": ("KV load", "#17becf"),
    "QK": ("QK^T", "#1f77b4"),
    "S": ("softmax + rescale", "#2ca02c"),
    "PV": ("PV", "#ff7f0e"),
    "O": ("output store", "#e377c2"),
}


def _stage(label: str) -> tuple[str, int]:
    m = re.match(r"(\S+) (\d+)$", label)
    return (m.group(1), int(m.group(2))) if m else (label or "op", -1)


def chrome_trace(sim: SimResult, clock_ghz: float, name: str = "pipeline") -> dict:
    """The simulation as a Chrome trace document (``{"traceEvents": [...]}``).

    Parameters
    ----------
    sim : SimResult
        A finished simulation.
    clock_ghz : float
        Clock that converts cycles to microseconds.
    name : str
        Process name shown by the viewer.
    """
    if not clock_ghz > 0:
        raise ValueError(f"clock_ghz must be > 0, got {clock_ghz!r}")
    g = sim.graph
    us = 1e-3 / clock_ghz
    events: list[dict] = [
        {"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": name}}
    ]
    for i, p in enumerate(g.pipes):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": i, "args": {"name": p}})
        events.append(
            {"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": i, "args": {"sort_index": i}}
        )
    for op in range(len(g)):
        stage, block = _stage(g.label[op])
        events.append(
            {
                "name": g.label[op] or "op",
                "cat": stage,
                "ph": "X",
                "ts": sim.start[op] * us,
                "dur": (sim.end[op] - sim.start[op]) * us,
                "pid": 0,
                "tid": g.pipe[op],
                "args": {"block": block, "op": op},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_trace(
    path: str | os.PathLike[str], sim: SimResult, clock_ghz: float, name: str = "pipeline"
) -> None:
    """Write :func:`chrome_trace` as JSON to ``path`` (open it in ui.perfetto.dev)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(chrome_trace(sim, clock_ghz, name), fh)


def gantt_figure(sim: SimResult, clock_ghz: float, title: str = "", blocks: int = 6) -> Figure:
    """A Gantt chart up to the end of KV block ``blocks - 1``: one row per pipe, time in µs.

    Examples
    --------
    >>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, run
    >>> hw = load_hardware("ascend910c")
    >>> _, sim = run(hw, AttentionShape(1, 2, 2048), default_schedule(hw), keep_sim=True)
    >>> fig = gantt_figure(sim, 1.8, blocks=3)
    >>> fig.axes[0].get_xlabel()
    'time (µs)'
    """
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    g = sim.graph
    us = 1e-3 / clock_ghz
    fig = Figure(figsize=(12, 0.45 * len(g.pipes) + 1.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # window: until the last op of block ``blocks - 1`` ends; every op starting before it
    t_end = max(
        (sim.end[op] for op in range(len(g)) if 0 <= _stage(g.label[op])[1] < blocks),
        default=sim.makespan,
    )
    bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
    seen: dict[str, None] = {}
    for op in range(len(g)):
        stage, _ = _stage(g.label[op])
        if sim.start[op] >= t_end:
            continue
        bars.setdefault((g.pipe[op], stage), []).append(
            (sim.start[op] * us, (sim.end[op] - sim.start[op]) * us)
        )
        seen.setdefault(stage, None)
    for (p, stage), spans in bars.items():
        colour = STAGES.get(stage, (stage, "#bcbd22"))[1]
        ax.broken_barh(spans, (p - 0.4, 0.8), facecolors=colour, edgecolors="none")
    ax.set_yticks(range(len(g.pipes)), g.pipes)
    ax.invert_yaxis()
    ax.set_xlabel("time (µs)")
    ax.set_ylabel("pipe (in-order server)")
    ax.set_title(title or f"first {blocks} KV blocks of the busiest core")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[
            Patch(color=STAGES.get(s, (s, "#bcbd22"))[1], label=STAGES.get(s, (s, ""))[0])
            for s in seen
        ],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize="small",
        title="stage",
    )
    return fig


def write_gantt(
    path: str | os.PathLike[str], sim: SimResult, clock_ghz: float, title: str = "", blocks: int = 6
) -> None:
    """Save :func:`gantt_figure` as a PNG to ``path``."""
    gantt_figure(sim, clock_ghz, title, blocks).savefig(path, dpi=120)
