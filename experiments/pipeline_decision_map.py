"""Decision map: where AMLA's integer add pays off against CANN's FP32 path by more than the
model's uncertainty.

For each KV block size x s_q cell, the time of ``fa_fp32`` (CANN's workspace path) relative
to ``amla`` on common samples of the unsourced parameters (nominal point + a Latin
hypercube, :func:`amla_numerics.pipeline.sensitivity.paired_gap`); three panels: 128
heads at the nominal L2 bandwidth, 32 heads (a TP-4 share of 128), and 128 heads with the
L2 bandwidth at the low end of its range. A cell "pays off" when the whole interval of the
gap is above +1 %, "does not" when it is below +1 % everywhere, and is "within the
uncertainty" otherwise.

Run: ``PYTHONPATH=. .venv/bin/python experiments/pipeline_decision_map.py [OUT_DIR]``
(writes ``pipeline_decision_map.csv`` and ``.png``; docs/pipeline.md section 9).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.sensitivity import paired_gap
from amla_numerics.pipeline.shape import AttentionShape

BLOCKS = (128, 256, 512)
SQ = (1, 2, 4)
BATCH, KV = 32, 8192
SAMPLES = 3
THRESHOLD = 0.01


def panels() -> list[tuple[str, object, int]]:
    hw = load_hardware("ascend910c")
    low = hw.ranges["l2_chip_gbps"][0]
    return [
        ("128 heads, L2 14.4 TB/s", hw, 128),
        ("32 heads (TP 4), L2 14.4 TB/s", hw, 32),
        (f"128 heads, L2 {low / 1000:g} TB/s (pinned)", hw.pin(l2_chip_gbps=low), 128),
    ]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    for title, hw, heads in panels():
        for bn in BLOCKS:
            for sq in SQ:
                wl = AttentionShape(BATCH, sq, KV, heads=heads)
                sch = [default_schedule(hw, v, kv_block=bn) for v in ("amla", "fa_fp32")]  # type: ignore[arg-type]
                nom, lo, hi = paired_gap(hw, wl, sch, samples=SAMPLES)["fa_fp32"]  # type: ignore[arg-type]
                verdict = (
                    "pays off" if lo > THRESHOLD else ("no" if hi < THRESHOLD else "uncertain")
                )
                rows.append(
                    dict(panel=title, block_n=bn, s_q=sq, gap=nom, lo=lo, hi=hi, verdict=verdict)
                )
                print(
                    f"{title:32s} block {bn:4d} s_q {sq}: fa_fp32 {nom:+.1%}"
                    f" [{lo:+.1%}, {hi:+.1%}] {verdict}",
                    flush=True,
                )
    print(f"{len(rows)} cells in {time.perf_counter() - t0:.0f} s")
    with open(out / "pipeline_decision_map.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    code = {"no": 0, "uncertain": 1, "pays off": 2}
    cmap = ListedColormap(["#d9d9d9", "#fdd49e", "#74c476"])
    for i, (title, _, _) in enumerate(panels()):
        ax = fig.add_subplot(1, 3, i + 1)
        cells = [r for r in rows if r["panel"] == title]
        grid = [
            [
                code[next(r for r in cells if r["block_n"] == bn and r["s_q"] == sq)["verdict"]]
                for bn in BLOCKS
            ]
            for sq in SQ
        ]
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=2, origin="lower")
        for a, sq in enumerate(SQ):
            for b, bn in enumerate(BLOCKS):
                r = next(r for r in cells if r["block_n"] == bn and r["s_q"] == sq)
                ax.text(
                    b,
                    a,
                    f"{r['gap']:+.1%}\n[{r['lo']:+.1%}, {r['hi']:+.1%}]",
                    ha="center",
                    va="center",
                    fontsize=8,
                )
        ax.set_xticks(range(len(BLOCKS)), [str(b) for b in BLOCKS])
        ax.set_yticks(range(len(SQ)), [str(s) for s in SQ])
        ax.set_xlabel("KV block size (tokens)")
        ax.set_ylabel("s_q (query tokens per request)")
        ax.set_title(title, fontsize=10)
    fig.suptitle(
        f"FP32 workspace path slower than AMLA by (nominal [range of {SAMPLES} Latin-hypercube "
        f"samples: a density view, not bounds]); green: > {THRESHOLD:.0%} over the samples, "
        f"amber: within their spread, grey: no gain "
        f"(ascend910c, batch {BATCH}, s_k {KV})",
        fontsize=10,
    )
    fig.savefig(out / "pipeline_decision_map.png", dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/figures"))
