"""How much slower CANN's FP32 workspace path is than AMLA, bounded over the parameter box.

MLA decode on ascend910c (batch 128, s_k 16384, 128 heads) at s_q 1 and 2: the gap
``time(fa_fp32) / time(amla) - 1`` at the nominal point and its two ends over the unsourced
parameters' box (vertices + pattern search, both variants at the same point, the anchored
``mmad_overhead_cycles`` re-fitted to AMLA's 614 TFLOPS at every point, points that cannot
reach it excluded), with the parameter values at each end.

Run: ``.venv/bin/python experiments/pipeline_gap_bounds.py`` (a few minutes)
"""

from __future__ import annotations

from amla_numerics.pipeline.extremes import Calibration
from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.sensitivity import gap_bounds
from amla_numerics.pipeline.shape import AttentionShape


def main() -> None:
    hw = load_hardware("ascend910c")
    cal = Calibration(hw)  # re-fits shared by both shapes
    for q_len in (1, 2):
        wl = AttentionShape(128, q_len, 16384)
        b = gap_bounds(
            hw, wl, default_schedule(hw, "amla"), default_schedule(hw, "fa_fp32"), calibration=cal
        )
        print(
            f"s_q {q_len}: FP32 path slower than AMLA by {b.nominal:+.2%} nominal, "
            f"bounds [{b.low.value:+.2%}, {b.high.value:+.2%}]; {b.note()}"
        )
        for name, end in (("low", b.low), ("high", b.high)):
            pts = ", ".join(f"{k}={v:g}" for k, v in sorted(end.point.items()))
            print(f"  {name} end at {pts}")


if __name__ == "__main__":
    main()
