"""The validation table of the pipeline model: every published figure, the model's figure,
the error, and whether a constant was fitted on it (and which, at what value) or it is a
prediction. docs/pipeline.md section 6 includes this output.

Run: ``.venv/bin/python experiments/validation_table.py``
"""

from __future__ import annotations

from amla_numerics.pipeline.calibrate import ANCHORS, Anchor, anchor_result
from amla_numerics.pipeline.hardware import load_hardware

_UNITS = {"tflops": "TFLOPS", "hbm_gbps": "GB/s"}


def _config(a: Anchor) -> str:
    w = dict(a.workload)
    parts = [a.hardware, a.variant, f"batch {w.get('batch')}", f"s_q {w.get('q_len')}"]
    parts += [f"{w.get('heads', 128)} heads", f"s_k {w.get('kv_len')}"]
    if "d_qk" in w:
        parts.append(f"d {w['d_qk']}/{w.get('d_v')}")
    if w.get("causal"):
        parts.append("causal")
    return ", ".join(str(p) for p in parts)


def rows() -> list[str]:
    """The table's markdown rows (header first)."""
    out = [
        "| anchor | configuration | published | model | error | fitted or predicted |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in ANCHORS.items():
        value = float(getattr(anchor_result(a), a.metric))
        err = value / a.target - 1
        if a.role.startswith("fit "):
            field = a.role.removeprefix("fit ")
            role = f"fitted: `{field}` = {load_hardware(a.hardware)[field]:g}"
        else:
            role = "predicted" + (" (miss)" if abs(err) > 0.15 else "")
        out.append(
            f"| {name} | {_config(a)} | {a.target:g} {_UNITS[a.metric]} | {value:.1f} |"
            f" {err:+.1%} | {role} |"
        )
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
