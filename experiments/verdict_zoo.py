"""Experiment: the default verdict on the kernel zoo (``tests/zoo.py``).

Every zoo kernel (independent numpy code: float32 FlashAttention at three block sizes and
both KV orders, exp in float64, float32 P, a two-pass softmax, the correctly rounded answer,
AMLA written from the paper, each with float32 and BF16 output; and the buggy ones) runs on
the golden cases (``tests/zoo.py``: ``FULL_CASES``, the default ``make-cases`` workloads at
16 heads, or ``FAST_CASES`` with ``--fast``) and is judged by
:func:`amla_numerics.testing.compare` with its defaults (only the kernel's declared variant:
``amla`` for the AMLA kernels). Printed: one row per kernel with its verdict, the first
case that failed it and why, and the largest rule figures over the cases.

Run (about 5 minutes on 2 shared cores)::

    PYTHONPATH=. .venv/bin/python experiments/verdict_zoo.py
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.zoo import ZOO, golden_cases, verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="the small cases of the default tests")
    args = ap.parse_args()
    cases = golden_cases(full=not args.fast)
    print(f"cases: {', '.join(n for n, _ in cases)}\n")
    print(
        "| kernel | kind | verdict | caught by (first failing case: reason) | max_ratio | "
        "rms_ratio | lse_ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in ZOO:
        res = verdicts(k, cases)
        failed = [(n, c) for n, c in res if not c.passed]
        rules = [c.rule for _, c in res if c.rule is not None]

        def worst(attr: str, rules: list = rules) -> str:
            vals = [getattr(r, attr) for r in rules if not math.isnan(getattr(r, attr))]
            return f"{max(vals):.3g}" if vals else "-"

        kind = "correct" if k.correct else "buggy"
        verdict = "pass" if not failed else f"FAIL ({len(failed)}/{len(res)})"
        beyond = [(n, c) for n, c in failed if n.split("_h")[0] not in k.hazards]
        if failed and not beyond:
            verdict += ", only the scheme's published hazard case"
        if beyond:
            n, c = beyond[0]
            caught = f"{n}: {c.reasons[0].split(' (')[0]}"
            if c.diagnosis:
                caught += f"; likely cause: {c.diagnosis.split(':')[0]}"
        else:
            caught = k.note or "-"
        print(
            f"| {k.name} | {kind} | {verdict} | {caught} | {worst('max_ratio')} | "
            f"{worst('rms_ratio')} | {worst('lse_ratio')} |"
        )


if __name__ == "__main__":
    main()
