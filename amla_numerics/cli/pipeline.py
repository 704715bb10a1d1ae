"""``amla-numerics pipeline``: modelled throughput of one configuration, or a sweep.

Parse, build the configuration, call :func:`~amla_numerics.pipeline.model.run`, render.
With ``--sweep``, ``--batch``, ``--q-len``, ``--kv-len`` and ``--variant`` take
comma-separated lists and every combination is run (``--rescale``: the deprecated name of
``--variant``). ``--sensitivity`` adds the tornado and the bounds over the parameter box
(``tflops_range`` ..., with the parameter values at each end; in a sweep the anchor's
re-fits are shared by every configuration); ``--samples N`` the range of N Latin-hypercube
samples (a density view, not bounds).

Examples
--------
>>> from amla_numerics.cli import main
>>> main(["pipeline", "--batch", "4", "--kv-len", "1024", "--format", "table"])
... # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
hardware     ascend910c
variant      amla
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
import sys
from collections.abc import Mapping, Sequence

from amla_numerics.cli.commands import COMMANDS
from amla_numerics.pipeline.extremes import ALL_VERTICES, LEVELS, TOP, Calibration
from amla_numerics.pipeline.hardware import HARDWARE_NAMES, Hardware, load_hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.periodic import simulated_blocks
from amla_numerics.pipeline.plan import make_plan
from amla_numerics.pipeline.rescale import MODEL_VARIANTS, check_model_variant
from amla_numerics.pipeline.schedule import SCHEDULES, Schedule, default_schedule
from amla_numerics.pipeline.sensitivity import interval, sampled_range, tornado
from amla_numerics.pipeline.shape import KV_CACHES, AttentionShape

__all__ = ["register", "render", "run_cli"]

#: The fields that name a case, first in both the sweep table and the single-result listing.
_CASE_KEYS = ("hardware", "variant", "schedule", "batch", "q_len", "kv_len")

_SWEEP_COLUMNS = (
    *_CASE_KEYS,
    "time_us",
    "tflops",
    "tflops_range",
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
        skip = ("variant", "order", "rescale_prob", "splits")
        if not sep or key not in fields or key in skip:
            valid = ", ".join(k for k in fields if k not in skip)
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
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if v is None:
        return "-"
    return str(v)


#: CPU seconds per simulated KV block of one run on the 2-core development machine: the
#: mean over the runs of a box search (591 runs, 26 ms each for 22 blocks: the re-fits' far
#: points need up to three simulations and longer steady-state checks; the report's
#: configuration alone takes 11-13 ms, ``experiments/bench_pipeline.py``).
SECONDS_PER_BLOCK = 1.2e-3
#: Anchor simulations per re-fitted parameter point (secant steps of the re-fit; 480 for 128
#: points in the bounds of ascend910c amla batch 8, s_q 1, s_k 1024).
REFITS_PER_POINT = 4


def long_run_note(
    hw: Hardware, wl: AttentionShape, sch: Schedule, *, sensitivity: bool, samples: int
) -> str | None:
    """One line estimating a long run's time (None when it takes under 5 s).

    Simulations: 1 nominal; with ``sensitivity`` the tornado (2 per ranged parameter) and
    the box search (one-at-a-time ends, the vertices and one pattern-search pass per level
    and end, each with :data:`REFITS_PER_POINT` simulations of the anchor when a
    constant is re-fitted);
    ``samples`` more. Each costs the blocks it simulates (periodic runs cut) x
    :data:`SECONDS_PER_BLOCK`.
    """
    blocks = simulated_blocks(make_plan(hw, wl, sch))
    n = len(hw.ranges)
    sims, anchor = 1 + samples, 0
    if sensitivity:
        points = 2 * n + 2 * (2 ** min(n, ALL_VERTICES if n <= ALL_VERTICES else TOP))
        points += 2 * LEVELS * 2 * n  # one pass per level and end (a second if one improved)
        sims += 2 * n + points
        a = Calibration(hw).anchor
        if a is not None:
            shape = AttentionShape(**a.workload)  # type: ignore[arg-type]
            sch_a = default_schedule(hw, a.variant, **a.schedule)
            anchor = REFITS_PER_POINT * points * simulated_blocks(make_plan(hw, shape, sch_a))
    seconds = (sims * blocks + anchor) * SECONDS_PER_BLOCK
    if seconds < 5:
        return None
    return (
        f"amla-numerics: about {sims:,} simulations of {blocks:,} KV blocks"
        f"{' plus the anchor re-fits' if anchor else ''} (roughly {seconds:.0f} s)"
    )


def render(
    results: Sequence[PipelineResult],
    style: str = "table",
    tornado: Sequence[object] = (),
    sampled: Mapping[int, tuple[float, float]] | None = None,
) -> str:
    """Render results as ``json`` (one object, or a list for a sweep) or an aligned ``table``.

    Examples
    --------
    >>> from amla_numerics.pipeline import evaluate
    >>> print(render([evaluate(batch=2, kv_len=512)]).splitlines()[0].split())
    ['hardware', 'ascend910c']
    """
    sampled = sampled or {}
    if style == "json":
        docs = [r.to_dict() for r in results]
        for d, r in zip(docs, results, strict=True):
            if id(r) in sampled:
                d["sampled_time_us_density"] = list(sampled[id(r)])
        if tornado:
            docs[0]["tornado"] = [t.to_dict() for t in tornado]  # type: ignore[attr-defined]
        return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2)
    if len(results) == 1:
        r = results[0]
        lines = [
            (k, _fmt(getattr(r, k)))
            for k in (
                *_CASE_KEYS,
                "heads",
                "kv_heads",
                "time_us",
                "time_us_range",
                "tflops",
                "tflops_range",
                "utilization_range",
                "hbm_gbps",
                "bound",
                "roofline_tflops",
                "roofline_bound",
                "launch_us",
                "combine_us",
                "splits",
                "l2_spill",
            )
        ]
        if id(r) in sampled:
            lo, hi = sampled[id(r)]
            lines.append(("time_us sampled", f"[{lo:.6g}, {hi:.6g}] (density view, not bounds)"))
        if r.range_points:
            lines.append(("range", str(r.range_note)))
            for end, point in r.range_points.items():
                pts = ", ".join(f"{k}={v:g}" for k, v in sorted(point.items()))
                lines.append((f"at {end}", pts))
        lines += [(f"traffic {k}", f"{v / 1e9:.4g} GB") for k, v in r.traffic_bytes.items()]
        lines += [(f"util vs {n}", f"{u:.1%}") for n, u in r.peaks.items()]
        lines += [(f"busy {k}", f"{v:.1%}") for k, v in r.engines.items()]
        lines += [
            (f"critical {k}", f"{v:.1%}")
            for k, v in sorted(r.critical_path.items(), key=lambda kv: -kv[1])
            if v >= 0.001
        ]
        for t in tornado:
            lines.append(
                (
                    f"swing {t.name}",  # type: ignore[attr-defined]
                    f"{t.swing:.4g} us over [{t.lo:g}, {t.hi:g}]",  # type: ignore[attr-defined]
                )
            )
        w = max(len(k) for k, _ in lines)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in lines)
    cells = [[_fmt(getattr(r, c)) for c in _SWEEP_COLUMNS] for r in results]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_SWEEP_COLUMNS)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*_SWEEP_COLUMNS)] + [fmt.format(*c) for c in cells])


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The schedule fields the options set."""
    overrides: dict[str, object] = {}
    if args.schedule is not None:
        overrides["order"] = args.schedule
    if args.preload_depth is not None:
        overrides["preload_depth"] = args.preload_depth
    if args.block_n is not None:
        overrides["kv_block"] = args.block_n
    if args.splits is not None:
        overrides["splits"] = args.splits
    overrides.update(_settings(args.set or []))
    return overrides


def _run_one(
    args: argparse.Namespace, hw: Hardware, wl: AttentionShape, sch: Schedule
) -> PipelineResult:
    """Run one configuration; with ``--trace``/``--plot`` simulate every block and write them."""
    if not (args.trace or args.plot):
        res = run(hw, wl, sch)
        assert isinstance(res, PipelineResult)
        return res
    from amla_numerics.pipeline.trace import write_gantt, write_trace  # matplotlib

    res, sim = run(hw, wl, sch, keep_sim=True)  # type: ignore[misc]
    clock = hw["sustained_clock_ghz"] if hw.kind == "gpu" else hw["clock_ghz"]
    title = (
        f"{hw.name} {sch.variant} {sch.order}: batch {wl.batch}, s_q {wl.q_len}, s_k {wl.kv_len}"
    )
    if args.trace:
        write_trace(args.trace, sim, clock, title)
    if args.plot:
        write_gantt(args.plot, sim, clock, title)
    return res


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``amla-numerics pipeline``; returns the exit code."""
    hw = load_hardware(args.hardware)
    batches = _ints("--batch", args.batch)
    q_lens = _ints("--q-len", args.q_len)
    kv_lens = _ints("--kv-len", args.kv_len)
    if args.rescale is not None:
        if args.variant is not None:
            raise ValueError("--rescale is the deprecated name of --variant: give only --variant")
        print("amla-numerics: --rescale is deprecated, use --variant", file=sys.stderr)
    names = args.variant or args.rescale or "amla"
    flag = "--rescale" if args.rescale is not None else "--variant"
    rescales = [check_model_variant(v.strip(), flag) for v in names.split(",")]
    if args.rescale_prob is not None and "lazy" not in rescales:
        raise ValueError("--rescale-prob applies only to variant 'lazy'")
    combos = list(itertools.product(rescales, batches, q_lens, kv_lens))
    if len(combos) > 1 and not args.sweep:
        raise ValueError("lists of values need --sweep")
    if args.sweep and (args.trace or args.plot):
        raise ValueError("--trace and --plot apply to one configuration, not --sweep")
    if args.samples is not None and args.samples < 0:
        raise ValueError(f"--samples must be >= 0, got {args.samples}")
    samples = args.samples or 0
    overrides = _overrides(args)
    results = []
    sampled: dict[int, tuple[float, float]] = {}
    tornado_rows: list[object] = []
    # one calibration for every configuration: the anchor's re-fit at a parameter point
    # depends on the hardware only, so a sweep computes it once per point
    cal = Calibration(hw) if args.sensitivity else None
    noted = False
    for rescale, batch, q_len, kv_len in combos:
        wl = AttentionShape(
            batch=batch,
            q_len=q_len,
            kv_len=kv_len,
            heads=args.heads,
            kv_heads=args.kv_heads,
            d_qk=args.d_k,
            d_v=args.d_v,
            shared_kv=not args.separate_v,
            kv_cache=args.kv_cache,
            causal=args.causal,
        )
        prob = args.rescale_prob if rescale == "lazy" else None
        sch = default_schedule(hw, rescale, rescale_prob=prob, **overrides)
        if not noted:
            note = long_run_note(hw, wl, sch, sensitivity=args.sensitivity, samples=samples)
            if note:
                more = f", for the first of {len(combos)} configurations" if len(combos) > 1 else ""
                print(note + more, file=sys.stderr)
            noted = True
        res = _run_one(args, hw, wl, sch)
        if args.sensitivity:
            if len(combos) == 1:
                tornado_rows = list(tornado(hw, wl, sch))
            res = interval(hw, wl, sch, nominal=res, calibration=cal)
        if samples:
            lo, hi = sampled_range(hw, wl, sch, samples=samples)
            sampled[id(res)] = (lo, hi)
        results.append(res)
    print(render(results, args.format, tornado_rows, sampled))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pipeline`` subcommand."""
    p = subparsers.add_parser(
        "pipeline",
        help=COMMANDS["pipeline"][1],
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
        "--variant",
        default=None,
        help=f"variant or model design (with --sweep a comma list; default amla): "
        f"{', '.join(MODEL_VARIANTS)}",
    )
    p.add_argument("--rescale", default=None, help="deprecated name of --variant")
    _add_shape_arguments(p)
    _add_schedule_arguments(p)
    p.add_argument("--sweep", action="store_true", help="run every combination of the lists")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace JSON (Perfetto)")
    p.add_argument("--plot", metavar="FILE", help="write a Gantt plot (PNG)")
    p.set_defaults(handler=run_cli)


def _add_shape_arguments(p: argparse.ArgumentParser) -> None:
    """The attention shape: batch, lengths, heads, head dims, cache, mask."""
    p.add_argument("--batch", default="128", help="requests (with --sweep a comma list)")
    p.add_argument("--q-len", "--s-q", default="2", help="query tokens per request, s_q (list ok)")
    p.add_argument("--kv-len", "--s-k", default="16384", help="keys, s_k (list ok)")
    p.add_argument(
        "--heads",
        type=int,
        default=128,
        help="query heads on this device (default 128; divide by TP)",
    )
    p.add_argument(
        "--kv-heads", type=int, default=1, help="KV heads: 1 MLA/MQA, heads MHA, between GQA"
    )
    p.add_argument("--d-k", type=int, default=576, help="score head dim d_k (default 576)")
    p.add_argument("--d-v", type=int, default=512, help="value head dim d_v (default 512)")
    p.add_argument(
        "--separate-v",
        action="store_true",
        help="V is its own cache (GQA/MHA), not the first d_v columns of K (MLA)",
    )
    p.add_argument("--kv-cache", choices=KV_CACHES, default="bf16", help="KV cache format")
    p.add_argument(
        "--causal", action="store_true", help="causal mask (blocks above the diagonal skipped)"
    )


def _add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """The tiling, split and order, the uncertainty analyses and schedule overrides."""
    p.add_argument(
        "--block-n", type=int, default=None, help="KV block size (default: the kernel's)"
    )
    p.add_argument(
        "--splits",
        type=int,
        default=None,
        help="explicit split-KV count (default: the kernels' heuristic)",
    )
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="tornado (one-at-a-time swing per unsourced parameter) and bounds over the "
        "parameter box (the parameter values at each end; minutes)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="Latin-hypercube samples: where the time falls (a density view, not bounds)",
    )
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
        help="block ordering (default: the hardware's kernel: preload on Ascend, serial on a GPU)",
    )
    p.add_argument("--preload-depth", type=int, default=None, help="blocks in flight (2)")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a schedule field, e.g. kv_block=256 or l1_stream_buffers=2 "
        "(repeatable); a tiling that does not fit is rejected with the reason",
    )
