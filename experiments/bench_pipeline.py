"""Benchmark of the pipeline model: the steady-state extrapolation against the reference
event simulation of every block, measured in the same run (CPU time of this process).

1. The report's configuration (ascend910c, batch 128, s_q 2, s_k 16384) per variant:
   reference DES vs the fast path, and the largest relative difference of the time.
2. A 100-configuration sweep (batch x kv-len x s_q x variant): both paths.
3. The report's throughput table (nominal, every variant): its cost.

Run: ``.venv/bin/python experiments/bench_pipeline.py``
"""

from __future__ import annotations

import itertools
import platform
import time

from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.model import run
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.shape import AttentionShape
from amla_numerics.variants import VARIANTS

BATCHES = (8, 32, 64, 128, 256)
KV_LENS = (1024, 4096, 8192, 16384, 32768)
Q_LENS = (1, 2)
VARIANTS_SWEEP = ("amla", "fa_fp32")


def _cpu(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    print(f"python {platform.python_version()} on {platform.machine()}; CPU seconds")
    hw = load_hardware("ascend910c")
    wl = AttentionShape(128, 2, 16384)
    for v in ("amla", "fa_fp32"):
        sch = default_schedule(hw, v)
        ref = _cpu(lambda sch=sch: run(hw, wl, sch, reference=True), repeat=3)
        fast = _cpu(lambda sch=sch: run(hw, wl, sch), repeat=3)
        a, b = run(hw, wl, sch), run(hw, wl, sch, reference=True)
        diff = abs(a.time_us / b.time_us - 1)  # type: ignore[union-attr]
        print(
            f"report configuration, {v}: reference DES {ref:.3f} s, fast path {fast:.3f} s,"
            f" ratio {ref / fast:.1f}x; |time difference| {diff:.1e} relative"
        )
    configs = [
        (AttentionShape(b, q, kv), default_schedule(hw, v))
        for b, kv, q, v in itertools.product(BATCHES, KV_LENS, Q_LENS, VARIANTS_SWEEP)
    ]
    assert len(configs) == 100
    ref = _cpu(lambda: [run(hw, w, s, reference=True) for w, s in configs])
    fast = _cpu(lambda: [run(hw, w, s) for w, s in configs])
    print(
        f"sweep of 100 configurations: reference DES {ref:.1f} s, fast path {fast:.1f} s,"
        f" ratio {ref / fast:.1f}x"
    )
    table = _cpu(lambda: [run(hw, wl, default_schedule(hw, v)) for v in VARIANTS])
    print(f"report throughput table ({len(VARIANTS)} variants, nominal): {table:.2f} s")


if __name__ == "__main__":
    main()
