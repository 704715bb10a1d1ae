"""``amla-numerics pipeline``: modelled throughput of one configuration, or a sweep.

Parse, build the configuration, call :func:`~amla_numerics.pipeline.model.run`, render.
With ``--sweep``, ``--batch``, ``--q-len``, ``--kv-len`` and ``--rescale`` take
comma-separated lists and every combination is run.

Examples
--------
>>> from amla_numerics.cli import main
>>> main(["pipeline", "--batch", "4", "--kv-len", "1024", "--format", "table"])
... # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
hardware     ascend910c
rescale      amla
...
0
>>> main(["pipeline", "--batch", "0"])  # stderr: shape.batch must be >= 1, got 0
2
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Sequence

from amla_numerics.pipeline.hardware import HARDWARE_NAMES, load_hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.schedule import SCHEDULES, Schedule, default_schedule
from amla_numerics.pipeline.shape import AttentionShape
from amla_numerics.variants import VARIANTS, check_variant

__all__ = ["register", "render", "run_cli"]

_SWEEP_COLUMNS = (
    "hardware",
    "rescale",
    "schedule",
    "batch",
    "q_len",
    "kv_len",
    "time_us",
    "tflops",
    "utilization",
    "hbm_gbps",
    "bound",
)


def _ints(option: str, text: str) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            out.append(int(part))
        except ValueError:
            raise ValueError(
                f"{option} must be an integer or a comma-separated list of integers, got {text!r}"
            ) from None
    return out


def _settings(items: Sequence[str]) -> dict[str, object]:
    """Parse ``--set FIELD=VALUE`` schedule overrides (ints, or true/false for split_kv)."""
    fields = {f.name: f for f in dataclasses.fields(Schedule)}
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key in ("rescale", "order", "rescale_prob"):
            valid = ", ".join(k for k in fields if k not in ("rescale", "order", "rescale_prob"))
            raise ValueError(f"--set expects FIELD=VALUE with FIELD one of {valid}; got {item!r}")
        if key == "split_kv":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--set split_kv must be true or false, got {value!r}")
            out[key] = value.lower() == "true"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"--set {key} must be one integer, got {value!r}") from None
    return out


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def render(results: Sequence[PipelineResult], style: str = "table") -> str:
    """Render results as ``json`` (one object, or a list for a sweep) or an aligned ``table``.

    Examples
    --------
    >>> from amla_numerics.pipeline.model import evaluate
    >>> print(render([evaluate(batch=2, kv_len=512)]).splitlines()[0].split())
    ['hardware', 'ascend910c']
    """
    if style == "json":
        docs = [r.to_dict() for r in results]
        return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2)
    if len(results) == 1:
        r = results[0]
        lines = [
            (k, _fmt(getattr(r, k)))
            for k in (
                "hardware",
                "rescale",
                "schedule",
                "batch",
                "q_len",
                "kv_len",
                "heads",
                "time_us",
                "tflops",
                "hbm_gbps",
                "bound",
                "roofline_tflops",
                "roofline_bound",
            )
        ]
        lines += [(f"util vs {n}", f"{u:.1%}") for n, u in r.peaks.items()]
        lines += [(f"busy {k}", f"{v:.1%}") for k, v in r.engines.items()]
        lines += [
            (f"critical {k}", f"{v:.1%}")
            for k, v in sorted(r.critical_path.items(), key=lambda kv: -kv[1])
            if v >= 0.001
        ]
        w = max(len(k) for k, _ in lines)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in lines)
    cells = [[_fmt(getattr(r, c)) for c in _SWEEP_COLUMNS] for r in results]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_SWEEP_COLUMNS)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*_SWEEP_COLUMNS)] + [fmt.format(*c) for c in cells])


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``amla-numerics pipeline``; returns the exit code."""
    hw = load_hardware(args.hardware)
    batches = _ints("--batch", args.batch)
    q_lens = _ints("--q-len", args.q_len)
    kv_lens = _ints("--kv-len", args.kv_len)
    rescales = [check_variant(v.strip(), "--rescale") for v in args.rescale.split(",")]
    if args.rescale_prob is not None and "lazy" not in rescales:
        raise ValueError("--rescale-prob applies only to variant 'lazy'")
    combos = list(itertools.product(rescales, batches, q_lens, kv_lens))
    if len(combos) > 1 and not args.sweep:
        raise ValueError("lists of values need --sweep")
    if args.sweep and (args.trace or args.plot):
        raise ValueError("--trace and --plot apply to one configuration, not to --sweep")
    overrides: dict[str, object] = {}
    if args.schedule is not None:
        overrides["order"] = args.schedule
    if args.preload_depth is not None:
        overrides["preload_depth"] = args.preload_depth
    overrides.update(_settings(args.set or []))
    results = []
    for rescale, batch, q_len, kv_len in combos:
        wl = AttentionShape(batch=batch, q_len=q_len, kv_len=kv_len, heads=args.heads)
        prob = args.rescale_prob if rescale == "lazy" else None
        sch = default_schedule(hw, rescale, rescale_prob=prob, **overrides)
        if args.trace or args.plot:
            from amla_numerics.pipeline.trace import write_gantt, write_trace  # matplotlib

            res, sim = run(hw, wl, sch, keep_sim=True)  # type: ignore[misc]
            clock = hw["sustained_clock_ghz"] if hw.kind == "gpu" else hw["clock_ghz"]
            title = f"{hw.name} {rescale} {sch.order}: batch {batch}, s_q {q_len}, s_k {kv_len}"
            if args.trace:
                write_trace(args.trace, sim, clock, title)
            if args.plot:
                write_gantt(args.plot, sim, clock, title)
        else:
            res = run(hw, wl, sch)
        results.append(res)
    print(render(results, args.format))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pipeline`` subcommand."""
    p = subparsers.add_parser(
        "pipeline",
        help="modelled throughput of the MLA decode kernel on Ascend 910 or H800",
        description="Simulate the tiled attention pipeline (discrete-event model) and report "
        "time, TFLOPS, utilisation against each named peak, HBM GB/s, the binding "
        "engine and per-engine busy fractions.",
    )
    p.add_argument(
        "--hardware",
        default="ascend910c",
        help=f"one of {', '.join(HARDWARE_NAMES)}, or a path to a .toml file",
    )
    p.add_argument(
        "--rescale",
        default="amla",
        help=f"rescale variant (with --sweep a comma list): {', '.join(VARIANTS)}",
    )
    p.add_argument("--batch", default="128", help="requests (with --sweep a comma list)")
    p.add_argument("--q-len", default="2", help="query tokens per request, s_q (list ok)")
    p.add_argument("--kv-len", default="16384", help="cached tokens, s_k (list ok)")
    p.add_argument("--heads", type=int, default=128, help="query heads (default 128)")
    p.add_argument(
        "--rescale-prob",
        type=float,
        default=None,
        help="lazy only: fraction of blocks that rescale (default 0, measured on the mla workload)",
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=None,
        help="block ordering (default: the hardware's kernel: preload on Ascend)",
    )
    p.add_argument("--preload-depth", type=int, default=None, help="blocks in flight (2)")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a schedule field, e.g. kv_block=256 or l1_stream_buffers=2 "
        "(repeatable); a tiling that does not fit is rejected with the reason",
    )
    p.add_argument("--sweep", action="store_true", help="run every combination of the lists")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace JSON (Perfetto)")
    p.add_argument("--plot", metavar="FILE", help="write a Gantt plot (PNG)")
    p.set_defaults(handler=run_cli)
