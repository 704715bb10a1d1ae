"""The validation table of the pipeline model: every published figure, the model's figure,
the error, the model's bounds over the parameter box (predictions), and whether a constant
was fitted on it (and which, at what value) or it is a prediction. docs/pipeline.md
section 6 includes this output.

A host-timed figure (torch_npu's per-call time on the 910B2) is compared with the kernel
time plus the per-call host cost :data:`~amla_numerics.pipeline.calibrate.HOST_CALL_US`; its
bounds add that cost's range to the kernel time's bounds.

A second table gives the host-timed calls in microseconds and the error the model had
without the per-call host cost.

Run: ``.venv/bin/python experiments/validation_table.py`` (a few minutes: the bounds search
the parameter box of every prediction; ``--no-bounds`` skips them)
"""

from __future__ import annotations

import sys

from amla_numerics.pipeline.calibrate import (
    ANCHORS,
    HOST_CALL_RANGE,
    HOST_CALL_US,
    Anchor,
    anchor_result,
    anchor_value,
)
from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.sensitivity import interval
from amla_numerics.pipeline.shape import AttentionShape

_UNITS = {"tflops": "TFLOPS", "hbm_gbps": "GB/s"}


def _config(a: Anchor) -> str:
    w = dict(a.workload)
    parts = [a.hardware, a.variant, f"batch {w.get('batch')}", f"s_q {w.get('q_len')}"]
    parts += [f"{w.get('heads', 128)} heads", f"s_k {w.get('kv_len')}"]
    if "d_qk" in w:
        parts.append(f"d {w['d_qk']}/{w.get('d_v')}")
    if w.get("causal"):
        parts.append("causal")
    if a.timing == "host":
        parts.append("host-timed call")
    return ", ".join(str(p) for p in parts)


def bounds(a: Anchor) -> tuple[float, float]:
    """(lo, hi) of the anchor's metric over the parameter box (a rate of fixed work: the
    slow end of the time gives the low end); a host-timed call adds the host cost's range."""
    hw = load_hardware(a.hardware)
    wl = AttentionShape(**a.workload)  # type: ignore[arg-type]
    res = interval(hw, wl, default_schedule(hw, a.variant, **a.schedule))
    assert res.time_us_range is not None
    t_lo, t_hi = res.time_us_range
    if a.timing == "host":
        t_lo, t_hi = t_lo + HOST_CALL_RANGE[0], t_hi + HOST_CALL_RANGE[1]
    work = float(getattr(res, a.metric)) * res.time_us  # the metric is work / time
    return work / t_hi, work / t_lo


def _role(a: Anchor, err: float) -> str:
    if a.role.startswith("fit "):
        field = a.role.removeprefix("fit ")
        value = HOST_CALL_US if field == "host_call_us" else load_hardware(a.hardware)[field]
        return f"fitted: `{field}` = {value:g}"
    return "predicted" + (" (miss)" if abs(err) > 0.15 else "")


def rows(with_bounds: bool = True) -> list[str]:
    """The table's markdown rows (header first)."""
    out = [
        "| anchor | configuration | published | model | error | bounds | inside |"
        " fitted or predicted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, a in ANCHORS.items():
        value = anchor_value(a)
        err = value / a.target - 1
        cells = "- | -"
        if with_bounds and a.role == "prediction":
            lo, hi = bounds(a)
            cells = f"[{lo:.1f}, {hi:.1f}] | {'yes' if lo <= a.target <= hi else 'no'}"
        out.append(
            f"| {name} | {_config(a)} | {a.target:g} {_UNITS[a.metric]} | {value:.1f} |"
            f" {err:+.1%} | {cells} | {_role(a, err)} |"
        )
    return out


def host_rows() -> list[str]:
    """The host-timed calls in microseconds: published, modelled kernel (launch and combine
    included), with the per-call host cost, and the error without that cost."""
    out = [
        "| call | published (us) | kernel (us) | kernel + host cost (us) | error without the"
        " host cost |",
        "|---|---|---|---|---|",
    ]
    for name, a in ANCHORS.items():
        if a.timing != "host":
            continue
        res = anchor_result(a)
        published = res.time_us * float(getattr(res, a.metric)) / a.target
        out.append(
            f"| {name} (call) | {published:.1f} | {res.time_us:.1f} |"
            f" {res.time_us + HOST_CALL_US:.1f} | {published / res.time_us - 1:+.1%} |"
        )
    return out


if __name__ == "__main__":
    print("\n".join(rows(with_bounds="--no-bounds" not in sys.argv[1:])))
    print()
    print("\n".join(host_rows()))
