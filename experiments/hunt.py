"""An adversarial hunt for holes in the bounds, the reference and the emulator's input checks.

Random cases over every variant, policy (``ascend``, ``cann``, ``exact`` and FP8 / tensor-core
settings), mask kind (none, keep-mask, bias, causal, padding rows, fully masked rows), split
count and combine, with scores jumping 20-60 binades between keys, near-tie maxima, scores
near exp's underflow, V from 1e-38 to 1e30, cancelling V and tiny blocks. Each case checks:

* no exception and no warning on valid input (warnings are errors), in the reference, the
  emulator and the bounds;
* the reference finite on every row with an attended key, NaN on the others;
* every output element outside the emulator's ``garbage_mask()`` with a finite reference:
  finite, and ``|out - ref| <= bound + ref_err`` (the elementwise bound, or the split bound
  for a split run; ``ref_err`` the reference's own certificate: 1e-3 FP32 ULP for
  ``method="auto"``, half an FP64 ULP for the correctly rounded ``method="mpmath"``, which
  judges the FP64 policies);
* the bound never NaN.

Every failing case is saved as ``.npz`` in the results folder (inputs and configuration) and
replays with ``--replay FILE``. Usage::

    python experiments/hunt.py --minutes 30 --seed 1 --jobs 2 --out hunt_results
    python experiments/hunt.py --replay hunt_results/case_1_123_0.npz
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound, split_bound
from amla_numerics.flash.accumulate import ACCUMULATION_PRESETS
from amla_numerics.flash.policy import MatmulPolicy, get_policy
from amla_numerics.variants import VARIANTS

DTYPES = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16, "fp32": np.float32}
#: The class that is a counted hazard, not a hole: a non-finite output whose FP32 overflow
#: the emulator flagged (judged a failure of the kernel, by design; listed, not failed).
HAZARD_CLASS = "nonfinite_flagged_overflow"
U32 = 2.0**-24


def policies() -> dict[str, Any]:
    """The policies hunted over: the presets and FP8 / tensor-core settings."""
    asc = get_policy("ascend")
    h100 = MatmulPolicy("bf16", ACCUMULATION_PRESETS["h100"])
    return {
        "ascend": asc,
        "cann": get_policy("cann"),
        "exact": get_policy("exact"),
        "e4m3": asc.replace(name="e4m3", p_cast="e4m3", p_cast_rounding="rne"),
        "e5m2": asc.replace(name="e5m2", p_cast="e5m2", p_cast_rounding="rne"),
        "e4m3_s256": asc.replace(
            name="e4m3_s256", p_cast="e4m3", p_cast_rounding="rne", p_scale=256.0
        ),
        "fp16p": asc.replace(name="fp16p", p_cast="fp16", p_cast_rounding="rne"),
        "h100": asc.replace(name="h100", qk=h100, pv=h100),
        "h100_fp8": asc.replace(
            name="h100_fp8",
            p_cast="e4m3",
            p_cast_rounding="rne",
            pv=MatmulPolicy("bf16", ACCUMULATION_PRESETS["h100_fp8"]),
        ),
        "reverse": asc.replace(name="reverse", kv_order="reverse"),
    }


POLICIES = policies()


def make_case(rng: np.random.Generator) -> dict[str, Any]:
    """One random input set (valid by construction)."""
    m = int(rng.choice([1, 1, 2, 3, 5]))
    n = int(rng.choice([1, 2, 3, 5, 8, 17, 40, 100, 257]))
    dk = int(rng.choice([1, 2, 4, 8, 16]))
    dv = int(rng.choice([1, 2, 3, 8]))
    dtype = str(rng.choice(["bf16", "bf16", "fp16", "fp32"]))
    block_n = int(rng.choice([1, 2, 3, 4, 7, 16, 64]))
    q = rng.standard_normal((m, dk))
    k = rng.standard_normal((n, dk))
    vmag = 10.0 ** rng.uniform(-38, 30) if rng.random() < 0.6 else 1.0
    v = rng.standard_normal((n, dv)) * vmag
    if rng.random() < 0.2:  # per-key magnitudes spread over many binades
        v *= 2.0 ** rng.integers(-40, 40, size=(n, 1))
    top = float(ml_dtypes.finfo(DTYPES[dtype]).max) / 2  # valid input: finite in its format
    v = np.clip(v, -top, top)
    scale = 1.0 / math.sqrt(dk)
    if rng.random() < 0.3:
        scale = float(10.0 ** rng.uniform(-3, 2))
    if rng.random() < 0.1:
        scale = -scale
    bias = np.zeros((m, n))
    kind = str(rng.choice(["plain", "jumps", "underflow", "ties", "cancel", "big_scores"]))
    if kind == "jumps":  # the max jumps by 20-60 binades at random keys
        steps = rng.uniform(20, 60, size=n) * math.log(2) * (rng.random(n) < 0.3)
        bias = np.broadcast_to(np.cumsum(steps * rng.choice([1, -1], size=n)), (m, n)).copy()
    elif kind == "underflow":  # scores near exp's underflow (FP32 ~-103.3, FP64 ~-745)
        edge = float(rng.choice([87.0, 103.0, 104.0, 110.0, 708.0, 745.0, 750.0]))
        bias = -edge + rng.uniform(-2, 2, size=(m, n))
        bias[:, rng.integers(n)] = 0.0
    elif kind == "ties":  # near-tie maxima
        j = rng.integers(n, size=max(1, n // 3))
        k[j] = k[j[0]]
        if rng.random() < 0.5:
            bias[:, j] = rng.choice([0.0, 1e-7, -1e-7], size=j.size)
    elif kind == "cancel":  # values that cancel over tied keys
        half = n // 2
        if half:
            k[half : 2 * half] = k[:half]
            v[half : 2 * half] = -v[:half]
        if rng.random() < 0.5 and n > 2 * half:
            bias[:, -1] = float(rng.choice([-30.0, -120.0, -800.0, -1e4]))
    elif kind == "big_scores":
        q *= 2.0 ** rng.integers(3, 9)
    mask_kind = str(rng.choice(["none", "keep", "bias", "causal", "padding", "dead_rows"]))
    keep = rng.random((m, n)) < 0.7
    causal = mask_kind == "causal"
    if mask_kind == "keep":
        mask = keep
    elif mask_kind == "padding":  # trailing keys masked for every row
        mask = np.ones((m, n), bool)
        mask[:, max(1, n - int(rng.integers(0, n))) :] = False
    elif mask_kind == "dead_rows":  # some rows with no key at all
        mask = keep.copy()
        mask[rng.random(m) < 0.5] = False
    else:
        mask = None
    if kind != "plain" or mask_kind == "bias":
        fbias = bias.copy()
        if mask_kind == "bias":
            fbias[~keep] = -np.inf
        if mask is not None and mask.dtype == bool:
            fbias[~mask] = -np.inf
        mask = fbias if np.any(fbias) or mask_kind == "bias" else mask
    dt = DTYPES[dtype]
    return {
        "q": q.astype(dt),
        "k": k.astype(dt),
        "v": v.astype(dt),
        "scale": scale,
        "mask": mask,
        "causal": causal,
        "block_n": block_n,
        "kind": kind,
        "mask_kind": mask_kind,
    }


def runs(rng: np.random.Generator, case: dict[str, Any]) -> list[dict[str, Any]]:
    """The (variant, policy, splits, combine) runs on one input set."""
    out = []
    for _ in range(int(rng.integers(2, 6))):
        variant = str(rng.choice(VARIANTS))
        pol = str(rng.choice(list(POLICIES)))
        if variant == "fa4" and case["scale"] < 0:
            continue  # fa4 takes no negative scale (refused at the entry)
        splits = int(rng.choice([1, 1, 2, 3, 4])) if variant != "naive" else 1
        combine = str(rng.choice(["cann", "flashmla"]))
        out.append({"variant": variant, "policy": pol, "splits": splits, "combine": combine})
    return out


def _ref(case: dict[str, Any], fp64: bool) -> tuple[np.ndarray, np.ndarray]:
    """The reference and its own error bound (auto: 1e-3 FP32 ULP; mpmath: 1/2 FP64 ULP)."""
    mask = case["mask"]
    if case["causal"]:
        m, n = case["q"].shape[0], case["k"].shape[0]
        tri = np.arange(n)[None, :] <= np.arange(m)[:, None] + (n - m)
        mask = (
            tri
            if mask is None
            else (mask & tri if mask.dtype == bool else np.where(tri, mask, -np.inf))
        )
    method = "mpmath" if fp64 else "auto"
    ref = reference.attention(
        case["q"], case["k"], case["v"], case["scale"], mask=mask, method=method
    )
    a = np.abs(ref)
    if fp64:
        err = np.where(np.isfinite(a), np.spacing(a) / 2, 0.0)
    else:
        e = np.frexp(np.where(np.isfinite(a) & (a > 0), a, 1.0))[1] - 1
        err = 1e-3 * np.ldexp(1.0, np.maximum(e, -126) - 23)
    return ref, err


def check_run(case: dict[str, Any], run: dict[str, Any], refs: dict) -> list[str]:
    """The failures of one run (class names; empty when it holds)."""
    pol = POLICIES[run["policy"]]
    fp64 = pol.work == "fp64"
    if fp64 not in refs:
        refs[fp64] = _ref(case, fp64)
    ref, ref_err = refs[fp64]
    fails = []
    live = np.isfinite(ref).all(axis=-1)
    dead_rows = np.isnan(ref).all(axis=-1)
    if not np.all(live | dead_rows):
        fails.append("reference_nonfinite")
    kw = {"mask": case["mask"], "causal": case["causal"]}
    res = flash.attention(
        case["q"],
        case["k"],
        case["v"],
        run["variant"],
        scale=case["scale"],
        block_n=case["block_n"],
        policy=pol,
        splits=run["splits"],
        combine=run["combine"],
        **kw,
    )
    if run["splits"] > 1:
        bound = split_bound(
            run["variant"],
            case["q"],
            case["k"],
            case["v"],
            case["scale"],
            splits=run["splits"],
            block_n=case["block_n"],
            policy=pol,
            combine=run["combine"],
            **kw,
        )
    else:
        b = a_priori_bound(
            run["variant"],
            head_dim=case["q"].shape[-1],
            kv_len=case["k"].shape[0],
            block_n=case["block_n"],
            policy=pol,
        )
        bound = elementwise_bound(b, case["q"], case["k"], case["v"], case["scale"], **kw)
    bound = np.asarray(bound, np.float64)
    if np.isnan(bound).any():
        fails.append("bound_nan")
    out = np.asarray(res.out, np.float64)
    judged = np.isfinite(ref) & ~res.garbage_mask()
    bad_nf = judged & ~np.isfinite(out)
    if bad_nf.any():
        over = res.hazard_mask.get("overflow")
        flagged = over is not None and bool(np.all(over[bad_nf]))
        fails.append(HAZARD_CLASS if flagged else "nonfinite_unflagged")
    fin = judged & np.isfinite(out)
    err = np.abs(out - ref)
    with np.errstate(invalid="ignore"):
        viol = fin & (err > bound + ref_err)
    if viol.any():
        ratio = float(np.max(err[viol] / (bound[viol] + ref_err[viol])))
        fails.append(f"bound_violation({ratio:.3g}x)")
    return fails


def _class(fail: str, run: dict[str, Any]) -> str:
    """``failure | policy | split combine`` (the variant is listed beside it in the summary)."""
    base = fail.split("(")[0] if fail.startswith("bound_violation") else fail
    split = f"split-{run['combine']}" if run["splits"] > 1 else "unsplit"
    return f"{base} | {run['policy']} | {split}"


def save_case(path: Path, case: dict[str, Any], run: dict[str, Any], fails: list[str]) -> None:
    arrays = {key: case[key] for key in ("q", "k", "v")}
    for key in ("q", "k", "v"):  # bfloat16 kept as its bits
        if case[key].dtype == ml_dtypes.bfloat16:
            arrays[key] = case[key].view(np.uint16)
    meta = {key: case[key] for key in ("scale", "causal", "block_n", "kind", "mask_kind")}
    meta["dtype"] = str(case["q"].dtype)
    meta.update(run)
    meta["fails"] = fails
    if case["mask"] is not None:
        arrays["mask"] = case["mask"]
    np.savez(path, meta=json.dumps(meta), **arrays)


def load_case(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    case = {key: meta[key] for key in ("scale", "causal", "block_n", "kind", "mask_kind")}
    for key in ("q", "k", "v"):
        a = z[key]
        case[key] = a.view(ml_dtypes.bfloat16) if meta["dtype"] == "bfloat16" else a
    case["mask"] = z["mask"] if "mask" in z else None
    run = {key: meta[key] for key in ("variant", "policy", "splits", "combine")}
    return case, run


def _checked(case: dict[str, Any], run: dict[str, Any], refs: dict) -> list[str]:
    """:func:`check_run` with warnings as errors; an exception is a failure (valid input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return check_run(case, run, refs)
        except Exception as exc:  # every exception on valid input is a finding
            line = traceback.format_exception_only(type(exc), exc)[-1].strip()[:120]
            return [f"exception: {line}"]


def one_case(seed: int, index: int, out_dir: Path) -> tuple[int, list[tuple[str, str, str]]]:
    """Case ``index`` of ``seed``: (runs, [(failure class, saved file, variant)])."""
    rng = np.random.default_rng([seed, index])
    case = make_case(rng)
    found = []
    refs: dict = {}
    todo = runs(rng, case)
    for r, run in enumerate(todo):
        fails = _checked(case, run, refs)
        if fails:
            path = out_dir / f"case_{seed}_{index}_{r}.npz"
            save_case(path, case, run, fails)
            found += [(_class(f, run), str(path), run["variant"]) for f in fails]
    return len(todo), found


def _worker(args: tuple) -> tuple:
    seed, index, out_dir = args
    t0 = time.process_time()
    n, found = one_case(seed, index, Path(out_dir))
    return n, found, time.process_time() - t0


def hunt(minutes: float, seed: int, jobs: int, out_dir: Path, max_cases: int | None = None) -> dict:
    """Run cases until ``minutes`` of wall time (or ``max_cases``) are spent; the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t_end = time.monotonic() + 60 * minutes
    total_runs = cases = 0
    cpu = 0.0
    classes: Counter = Counter()
    examples: dict[str, str] = {}
    variants: dict[str, set] = {}

    def take(res):
        nonlocal total_runs, cases, cpu
        n, found, t = res
        cases += 1
        total_runs += n
        cpu += t
        for c, path, variant in found:
            classes[c] += 1
            examples.setdefault(c, path)
            variants.setdefault(c, set()).add(variant)

    index = 0
    if jobs <= 1:
        while time.monotonic() < t_end and (max_cases is None or index < max_cases):
            take(_worker((seed, index, str(out_dir))))
            index += 1
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs) as pool:
            pending = []
            while time.monotonic() < t_end and (max_cases is None or index < max_cases):
                while len(pending) < 4 * jobs:
                    pending.append(pool.apply_async(_worker, ((seed, index, str(out_dir)),)))
                    index += 1
                take(pending.pop(0).get())
            for p in pending:
                take(p.get())
    return {
        "cases": cases,
        "runs": total_runs,
        "cpu_s": cpu,
        "classes": classes,
        "examples": examples,
        "variants": variants,
    }


def replay(path: str) -> int:
    case, run = load_case(path)
    print(json.dumps(run), case["kind"], case["mask_kind"], "block_n", case["block_n"])
    fails = _checked(case, run, {})
    print("fails:", fails or "none")
    return 1 if fails else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="wall-clock budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("--out", default="hunt_results", help="folder for the failing cases (.npz)")
    ap.add_argument("--replay", default=None, help="replay one saved case")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    t0 = time.perf_counter()
    s = hunt(args.minutes, args.seed, args.jobs, Path(args.out), args.max_cases)
    wall = time.perf_counter() - t0
    failures = {c: n for c, n in s["classes"].items() if not c.startswith(HAZARD_CLASS)}
    print(
        f"hunt seed {args.seed}: {s['cases']} cases, {s['runs']} runs, "
        f"{s['cpu_s']:.0f} s CPU, {wall:.0f} s wall, {sum(failures.values())} failures, "
        f"{sum(s['classes'].values()) - sum(failures.values())} runs with flagged overflow"
    )
    for c, n in sorted(s["classes"].items(), key=lambda t: (-t[1], t[0])):
        print(f"  {n:5d}  {c}  [{', '.join(sorted(s['variants'][c]))}]  e.g. {s['examples'][c]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
