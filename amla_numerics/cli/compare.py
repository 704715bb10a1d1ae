"""``amla-numerics compare DUMP...``: judge a kernel's dumped outputs against the exact answer.

A DUMP is a ``.npz`` or ``.safetensors`` file holding ``q``, ``k``, ``v``, ``out`` and
optionally ``scale``, ``mask``, ``lse`` (a directory: every dump in it). Every dump is read
and validated first (a bad file is a usage error: exit 2, one sentence); then each is
compared with the certified reference and judged by the default rule
(:mod:`amla_numerics.testing.rule`: the error against the declared schedule's,
``--variant/--policy/--block-n/--splits``, default ``fa_fp32``; the schedule's a priori bound;
the lse whenever the dump has one; degenerate outputs), plus the limits (``--max-*``) and/or
a budget (``--budget FILE --kernel NAME``). Exit 0 when every dump passes, 1 when some do
not (each failure printed as ``OVER: <kernel> <case> <metric> measured X > budget Y`` with
the worst index, and the rule's reasons), 2 on a usage error.

Examples
--------
>>> from amla_numerics.cli import main
>>> main(["compare", "no/such/dump.npz"])  # stderr: no such file or directory ...
2
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from amla_numerics.cli.commands import COMMANDS, CheckFailed

__all__ = ["register", "render_verdicts"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare",
        help=COMMANDS["compare"][1],
        description="Compare each dump's 'out' with the certified reference of its q, k, v: "
        "condition-aware error, row error, BF16-output ULPs, worst elements, bit match with "
        "every emulated variant; exit 1 if a limit or budget is exceeded.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help=".npz/.safetensors files or dirs")
    p.add_argument("--budget", metavar="FILE", default=None, help="budgets TOML")
    p.add_argument("--kernel", metavar="NAME", default=None, help="the kernel's table in --budget")
    p.add_argument("--max-cond-err", type=float, default=None, help="limit on cond_err_max")
    p.add_argument("--max-bf16-ulp", type=float, default=None, help="limit on bf16_out_max_ulp")
    p.add_argument("--max-row-rel", type=float, default=None, help="limit on row_rel_max")
    p.add_argument(
        "--variant",
        default=None,
        help="the schedule the kernel implements: the default rule compares with its emulated "
        "error and bound (default fa_fp32)",
    )
    p.add_argument(
        "--policy",
        default=None,
        help="emulator policy preset (default: ascend for BF16 inputs, FP32 matrix inputs for "
        "wider ones)",
    )
    p.add_argument("--block-n", type=int, default=512, help="the kernel's KV block length")
    p.add_argument(
        "--splits",
        type=int,
        default=None,
        help="the kernel's split-KV split count: emulate and bound with that many splits",
    )
    p.add_argument(
        "--combine",
        default="cann",
        help="the kernel's split-KV combine: cann (max/sum per split) or flashmla (log2 lse)",
    )
    p.add_argument(
        "--dtype",
        action="append",
        default=[],
        metavar="NAME=DTYPE",
        help="dtype of a raw-byte array (FP8 in .npz), e.g. q=float8_e4m3fn; repeatable",
    )
    p.add_argument(
        "--max-factor",
        type=float,
        default=None,
        help="the rule's max factor (default 2: each element within 2 x the schedule's worst "
        "+ 1 output ULP)",
    )
    p.add_argument(
        "--rms-factor",
        type=float,
        default=None,
        help="the rule's RMS factor (default 1.5 x the schedule's RMS error)",
    )
    p.add_argument(
        "--standard",
        default="schedule",
        help="the verdict's standard: schedule (default: the error against the declared "
        "schedule's), flash-attn, torch-sdpa, cann-l0, cann-l1, cann-l2, bound, budget",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        default=None,
        help="cann-*: a directory of baseline dumps (same file names; their 'out' is the "
        "third-party output) instead of the emulated schedule",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="with --budget: a dump no budget entry covers fails (else it is reported)",
    )
    p.add_argument("--no-bit-match", action="store_true", help="skip emulating every variant")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from amla_numerics.analysis.budgets import load_budgets
    from amla_numerics.dumps import find_dumps, parse_dtype_hints
    from amla_numerics.testing.assertions import limits_from
    from amla_numerics.testing.judge import load_attention_dump

    factors = _checked_args(args)
    budget = load_budgets(args.budget).kernel(args.kernel) if args.budget else None
    limits = limits_from(
        max_cond_err=args.max_cond_err, max_bf16_ulp=args.max_bf16_ulp, max_row_rel=args.max_row_rel
    )
    hints = parse_dtype_hints(args.dtype)
    paths = find_dumps(args.dumps)
    dumps = [load_attention_dump(p, dtypes=hints) for p in paths]  # all bad files first
    _check_fits(dumps)
    baselines = {} if args.baseline is None else _baselines(args.baseline, dumps, hints)
    verdicts = _judge_all(args, dumps, limits, budget, factors, baselines)
    print(render_verdicts(verdicts, args.format))
    for v in verdicts:
        if v.budget_covered is False and not args.strict:
            print(
                f"note: no entry of budget {v.kernel!r} covers case {v.case!r}: no budget "
                "applied (--strict fails it)",
                file=sys.stderr,
            )
    failed = [v for v in verdicts if not v.passed]
    if failed:
        raise CheckFailed(
            f"{len(failed)} of {len(verdicts)} dump(s) over budget:\n" + _failure_lines(failed)
        )
    return 0


def _checked_args(args: argparse.Namespace) -> dict[str, float]:
    """Refuse inconsistent or out-of-range options (ValueError naming the option); return
    the rule's factors ``{"max_factor": ..., "rms_factor": ...}``."""
    from amla_numerics.flash.policy import get_policy
    from amla_numerics.flash.splitkv import COMBINES
    from amla_numerics.testing.rule import MAX_FACTOR, RMS_FACTOR
    from amla_numerics.testing.standards import check_standard
    from amla_numerics.variants import check_variant

    if (args.budget is None) != (args.kernel is None):
        raise ValueError("--budget and --kernel go together (the kernel's table in the file)")
    if args.block_n < 1:
        raise ValueError(f"--block-n must be >= 1, got {args.block_n}")
    if args.splits is not None and args.splits < 1:
        raise ValueError(f"--splits must be >= 1, got {args.splits}")
    if args.combine not in COMBINES:
        raise ValueError(f"--combine: unknown {args.combine!r}; valid: {', '.join(COMBINES)}")
    if args.variant is not None:
        check_variant(args.variant, "--variant")
    if args.policy is not None:
        get_policy(args.policy)
    for opt in ("max_cond_err", "max_bf16_ulp", "max_row_rel"):
        val = getattr(args, opt)
        if val is not None and not val >= 0:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= 0, got {val}")
    factors = {}
    for opt, default in (("max_factor", MAX_FACTOR), ("rms_factor", RMS_FACTOR)):
        val = getattr(args, opt)
        if val is not None and not val >= 1:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= 1, got {val}")
        factors[opt] = default if val is None else float(val)
    check_standard(args.standard, "--standard")
    if args.standard == "budget" and args.budget is None:
        raise ValueError("--standard budget needs --budget FILE --kernel NAME")
    if args.baseline is not None and not args.standard.startswith("cann"):
        raise ValueError("--baseline goes with --standard cann-l0, cann-l1 or cann-l2")
    return factors


def _check_fits(dumps: list) -> None:
    """Refuse a dump whose reference and emulation cannot fit, before any work."""
    from amla_numerics.sizes import check_fits, emulator_cost, reference_cost

    for d in dumps:
        m = int(np.prod(d.out.shape[:-1]))
        cost = reference_cost(m, d.kv_len, d.q.shape[-1], d.v.shape[-1])
        cost = cost + emulator_cost(m, d.kv_len, d.q.shape[-1], d.v.shape[-1])
        check_fits(cost, f"{d.path} ({m} rows, {d.kv_len} keys)")


def _baselines(directory: str, dumps: list, hints: dict) -> dict[str, object]:
    """Each dump's baseline output: ``out`` of the same-named dump in ``directory``."""
    from pathlib import Path

    from amla_numerics.dumps import read_dump

    baselines: dict[str, object] = {}
    for d in dumps:
        bp = Path(directory) / Path(d.path).name
        if not bp.is_file():
            raise ValueError(f"--baseline: no baseline dump {bp} for {d.path}")
        bd = read_dump(bp, dtypes=hints)
        bd.require("out")
        baselines[d.path] = bd.arrays["out"]
    return baselines


def _judge_all(
    args: argparse.Namespace,
    dumps: list,
    limits: dict[str, float],
    budget: Any,
    factors: dict[str, float],
    baselines: dict[str, object],
) -> list:
    """Every dump judged (progress on a terminal's stderr when there are several)."""
    from amla_numerics.testing.judge import judge

    verdicts = []
    show = len(dumps) > 1 and sys.stderr.isatty()
    for i, d in enumerate(dumps):
        if show:
            print(f"[{i + 1}/{len(dumps)}] {d.path}", file=sys.stderr)
        verdicts.append(
            judge(
                d,
                limits=limits,
                budget=budget,
                kernel=args.kernel,
                variant=args.variant,
                policy=args.policy,
                block_n=args.block_n,
                bit_match=not args.no_bit_match,
                splits=args.splits,
                combine=args.combine,
                max_factor=factors["max_factor"],
                rms_factor=factors["rms_factor"],
                strict=args.strict,
                standard=args.standard,
                baseline=baselines.get(d.path),
            )
        )
    return verdicts


def _failure_lines(failed: list) -> str:
    """Each failed check with the worst index, the rule's reasons and the likely cause."""
    lines = []
    for v in failed:
        w = v.comparison.worst[0] if v.comparison.worst else None
        where = f" [worst index {list(w.index)}: out {w.out!r} vs ref {w.ref!r}]" if w else ""
        lines += [c.describe() + where for c in v.over]
        lines += [f"  {v.case}: {r}" for r in v.comparison.reasons]
        if v.comparison.diagnosis:
            lines.append(f"  {v.case}: likely cause: {v.comparison.diagnosis}")
    return "\n".join(lines)


def _g(x: float) -> str:
    return f"{x:.4g}"


def render_verdicts(verdicts: list, style: str = "table") -> str:
    """The verdicts as aligned text, markdown or JSON (one object per dump)."""
    if style == "json":
        return json.dumps([v.to_dict() for v in verdicts], indent=2)
    cols = (
        "case",
        "pass",
        "max_ratio",
        "rms_ratio",
        "lse_ratio",
        "cond_err_max",
        "cond_err_median",
        "row_rel_max",
        "rel_fro",
        "bf16_cr",
        "bf16_faithful",
        "bf16_rowmax_ulp",
        "bf16_rowmax_p999",
        "worst_index",
        "nearest_variant",
        "bit_match",
        "nonfinite",
    )
    rows = []
    for v in verdicts:
        m = v.comparison.metrics
        c = v.comparison
        best = max(c.bit_match.values()) if c.bit_match else None
        r = c.rule
        nan = float("nan")
        rows.append(
            (
                v.case,
                "ok" if v.passed else "FAIL",
                _g(r.max_ratio if r else nan),
                _g(r.rms_ratio if r else nan),
                _g(r.lse_ratio if r else nan),
                _g(m.cond_err_max),
                _g(m.cond_err_median),
                _g(m.row_rel_max),
                _g(m.rel_fro),
                _g(m.bf16_out_cr_frac),
                _g(m.bf16_out_faithful_frac),
                _g(m.bf16_out_rowmax_ulp_max),
                _g(m.bf16_out_rowmax_ulp_p999),
                str(list(m.worst_index)),
                c.nearest_variant or ("none" if c.bit_match else "-"),
                "-" if best is None else f"{best:.3f}",
                str(m.n_nonfinite),
            )
        )
    legend = (
        "max_ratio / rms_ratio / lse_ratio: the default rule's figures (pass at <= 1: each "
        "element within 2 x the schedule's worst error + 1 output ULP, RMS within 1.5 x the "
        "schedule's, lse within 2 x + 4 ULP; see docs/testing.md); "
        "cond_err: |out-ref| / (sum_k p|v|) in units of 2**-24; row_rel: per-row relative "
        "2-norm error; bf16_*: the output cast to BF16: share correctly rounded, share within "
        "1 ULP of it, error in BF16 ULPs of the row's largest |ref| (max, 99.9 %; the max ULP "
        "distance at each element's own value is bf16_out_max_ulp in the JSON); bit_match: "
        "the highest share of elements equal to an emulated variant's output "
        "(nearest_variant none below 0.5)"
    )
    if style == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join([*lines, "", legend])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols), *(fmt.format(*r) for r in rows), legend])
