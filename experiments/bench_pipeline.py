"""Benchmark of the pipeline model: a 100-configuration sweep and one large configuration.

Targets (issues 6 and 12), on the 2-core development machine: the sweep in <= 30 s,
batch 128 x kv-len 32768 in <= 2 s, ``--sensitivity`` of one configuration (tornado over
every ranged parameter
+ a 16-point Latin hypercube) in <= 60 s. The baseline measured in the same run is the analytic
(roofline) layer on the same configurations: the ratio says what the discrete-event
simulation costs over the closed-form sums.

Run: ``.venv/bin/python experiments/bench_pipeline.py``
"""

from __future__ import annotations

import itertools
import platform
import time

from amla_numerics.pipeline.analytic import analyze
from amla_numerics.pipeline.graph import build_graph
from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.model import run
from amla_numerics.pipeline.plan import make_plan
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.shape import AttentionShape as Workload

BATCHES = (8, 32, 64, 128, 256)
KV_LENS = (1024, 4096, 8192, 16384, 32768)
Q_LENS = (1, 2)
RESCALES = ("amla", "fa_fp32")


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    hw = load_hardware("ascend910c")
    configs = [
        (Workload(b, q, kv), default_schedule(hw, r))
        for b, kv, q, r in itertools.product(BATCHES, KV_LENS, Q_LENS, RESCALES)
    ]
    assert len(configs) == 100
    print(f"python {platform.python_version()} on {platform.machine()}")

    t_ana = _time(lambda: [analyze(make_plan(hw, wl, sch)) for wl, sch in configs])
    t_sweep = _time(lambda: [run(hw, wl, sch) for wl, sch in configs])
    print(
        f"sweep of {len(configs)} configurations (batch {BATCHES} x kv {KV_LENS} x q {Q_LENS}"
        f" x {RESCALES}): {t_sweep:.2f} s (target <= 30 s); analytic layer {t_ana:.3f} s;"
        f" DES / analytic = {t_sweep / t_ana:.0f}x"
    )

    wl, sch = Workload(128, 2, 32768), default_schedule(hw, "amla")
    ops = len(build_graph(make_plan(hw, wl, sch)).graph)
    t_one = _time(lambda: run(hw, wl, sch), repeat=3)
    t_one_ana = _time(lambda: analyze(make_plan(hw, wl, sch)), repeat=3)
    r = run(hw, wl, sch)
    print(
        f"batch 128, q-len 2, kv-len 32768, amla: {t_one:.3f} s (target <= 2 s), {ops} ops"
        f" ({ops / t_one:,.0f} ops/s); analytic {t_one_ana * 1e3:.1f} ms;"
        f" modelled {r.tflops:.1f} TFLOPS, {r.utilization:.1%} of {r.peak_name}"
    )


def sensitivity() -> None:
    from amla_numerics.pipeline.sensitivity import interval, tornado

    hw = load_hardware("ascend910c")
    wl, sch = Workload(128, 2, 16384), default_schedule(hw, "amla")
    t = time.perf_counter()
    sw = tornado(hw, wl, sch)
    r = interval(hw, wl, sch, samples=16, swings=sw)
    dt = time.perf_counter() - t
    lo, hi = r.tflops_range  # type: ignore[misc]
    print(
        f"--sensitivity of batch 128, q-len 2, kv-len 16384, amla: {dt:.1f} s (target <= 60 s),"
        f" {2 * len(sw) + 16 + 1} configurations; {r.tflops:.1f} TFLOPS [{lo:.1f}, {hi:.1f}];"
        f" largest swing {sw[0].name} {sw[0].swing:.1f} us"
    )


if __name__ == "__main__":
    main()
    sensitivity()
