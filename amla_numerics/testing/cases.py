"""Golden cases for hardware CI: inputs in the kernel's formats, the certified answers.

:func:`make_cases` writes one dump per case (``.npz`` or ``.safetensors``, see
:mod:`amla_numerics.dumps`) and ``manifest.json``. A kernel team runs its kernel on each
case's ``q``, ``k``, ``v`` (and ``mask``, ``scale``), adds ``out`` (and its ``lse``, natural
log, if it writes one: it is then judged), and runs ``amla-numerics compare``.

Each case file holds ``q`` (s_q, H, Dk), ``k`` (N, Dk), ``v`` (N, Dv) (= ``k[:, :Dv]``,
stored), all BF16; ``scale`` (float64: the exact value the reference used); ``mask``
(bool, (s_q, 1, N), True attends) where the case has one; and the reference: ``ref``
(float64, within 1e-3 FP32 ULP of the exact value, or its correctly rounded float64),
``ref_fp32`` and ``ref_bf16`` (the exact value correctly rounded, rne, certified by
:func:`amla_numerics.reference.rounded.rounded_reference`), ``ref_lse`` (float64, (s_q, H);
the name ``lse`` is left for the kernel's own).
Metadata (safetensors metadata, or the ``.npz``'s ``__metadata__``): case, workload,
heads, s_q, kv_len, head_dim, v_dim, seed.

Cases (``workload`` names)
--------------------------
``mla``
    DeepSeek-V3 MLA decode in absorbed form: Dk 576 (512 latent + 64 rope), Dv 512 with
    V = K[:, :512], RMS-normalised latent keys, scale ``1/sqrt(192)`` rounded to float64;
    s_q > 1 carries the causal mask of multi-token decode (query t sees keys j <= N - s_q + t).
``zero_vcol``
    ``mla`` with an all-zero V column (column 0 of the latent): AMLA's zero-operand hazard.
``sink``
    key 0 scores 12 nats above every other key for every head (through a rope feature,
    outside V): an attention sink.
``max_jump``
    the row max jumps by 40 nats (57 binades, beyond the kernel's -30 binade clamp) at key
    ``N/2 + 7``.
``masked_lead``
    the first two 512-key blocks fully masked, and every score about 60 nats below zero.
``positive_v``
    ``mla`` with a non-negative latent (so V >= 0): the outputs do not cancel, and an error
    that scales the running accumulator (a rescale, AMLA's compensation) shows at full size.
``fp8_saturation``
    the scores of every key from ``N/3`` on rise by 5.4 nats (7.8 binades, inside FA4's lazy
    threshold of 8): a lazy FP8 kernel's P with a static scale of 2**8 exceeds E4M3's 448.
``masked_row``
    ``mla`` at s_q >= 2 with token 0's every key masked: a fully masked row (its reference is
    NaN and it is left out of the verdict; the other rows are judged).
``split_drift``
    long context for split-KV kernels: the scores drift up by 40 nats from the first key to
    the last (through a feature outside V), so every split's max lies far below the row max
    (combine weights over many binades, a different AMLA ``2**n`` and ``r^`` per split).
``split_masked``
    long context for split-KV kernels: keys ``[N/4, N/2)`` masked for every row, so the
    splits inside that range have no live key (max ``-inf``, sum 0: the combine's guard).

Default (:data:`DEFAULT_PLAN`, about 80 MB): ``mla`` at 128 heads x s_q 1 and 2 x N 2001 (no
block size divides it), 16 heads x s_q 8 x N 2001 (causal prefill-like rows), the tile
boundaries N 513 (s_q 1 and 2) and 129, and N 8191; every hazard case at 128 heads x s_q 1 x
N 2001 (``masked_row`` at s_q 2). The long-context split cases (16 heads x N 131071) are
opt-in (``long=True``, ``make-cases --long``, or naming them in ``workloads``). A split
kernel is judged with its split count: ``amla-numerics compare DIR --splits S --variant V``
(the bound and the bit match then model S splits, :mod:`amla_numerics.flash.splitkv`).

Writing is atomic: every file goes to a temporary directory beside ``out_dir`` first, the
manifest last, and only then into ``out_dir``; a failure part-way leaves ``out_dir`` as it
was.

Examples
--------
>>> import tempfile, json
>>> d = tempfile.mkdtemp()
>>> m = make_cases(d, shapes=[Shape(4, 2, 1024)], workloads=["mla", "sink"])
>>> [c["name"] for c in m["cases"]]
['mla_h4_sq2_n1024', 'sink_h4_sq2_n1024']
>>> from pathlib import Path
>>> man = json.loads((Path(d) / "manifest.json").read_text())
>>> man["files"]["mla_h4_sq2_n1024.npz"] == man["cases"][0]["sha256"]
True
>>> sorted(p.name for p in Path(d).iterdir())  # nothing else: no temporary files
['manifest.json', 'mla_h4_sq2_n1024.npz', 'sink_h4_sq2_n1024.npz']
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from amla_numerics._version import __version__
from amla_numerics.dumps import write_dump

__all__ = [
    "CASE_WORKLOADS",
    "DEFAULT_PLAN",
    "DEFAULT_SHAPES",
    "HAZARD_SHAPE",
    "HAZARD_WORKLOADS",
    "SPLIT_SHAPE",
    "SPLIT_WORKLOADS",
    "Shape",
    "make_case",
    "make_cases",
    "parse_shape",
]

#: The hazard cases a kernel must survive.
HAZARD_WORKLOADS: tuple[str, ...] = (
    "zero_vcol",
    "sink",
    "max_jump",
    "masked_lead",
    "positive_v",
    "fp8_saturation",
    "masked_row",
)
#: The long-context cases a split-KV (flash-decoding) kernel must pass.
SPLIT_WORKLOADS: tuple[str, ...] = ("split_drift", "split_masked")
#: Every case workload.
CASE_WORKLOADS: tuple[str, ...] = ("mla", *HAZARD_WORKLOADS, *SPLIT_WORKLOADS)

_SINK_NATS = 12.0
_JUMP_NATS = 40.0
_LOW_NATS = -60.0
_DRIFT_NATS = 40.0
_FP8_RISE_NATS = 5.4


@dataclass(frozen=True)
class Shape:
    """A decode shape: ``heads`` query heads x ``s_q`` tokens against ``kv_len`` keys."""

    heads: int
    s_q: int
    kv_len: int
    head_dim: int = 576
    v_dim: int = 512

    def __post_init__(self) -> None:
        for name in ("heads", "s_q", "kv_len", "head_dim", "v_dim"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"shape field {name!r} must be an integer >= 1, got {val!r}")
        if self.v_dim > self.head_dim:
            raise ValueError(f"v_dim {self.v_dim} exceeds head_dim {self.head_dim} (V = K[:, :Dv])")
        if self.s_q > self.kv_len:
            raise ValueError(f"s_q {self.s_q} exceeds kv_len {self.kv_len}")

    @property
    def label(self) -> str:
        return f"h{self.heads}_sq{self.s_q}_n{self.kv_len}"

    @property
    def rows(self) -> int:
        return self.heads * self.s_q


#: The ``mla`` shapes of the default set: N that no block size divides, s_q > 1 with causal
#: masks, the tile boundaries 513 = 512 + 1 and 129 = 128 + 1, and a longer context.
DEFAULT_SHAPES: tuple[Shape, ...] = (
    Shape(128, 1, 2001),
    Shape(128, 2, 2001),
    Shape(16, 8, 2001),
    Shape(128, 1, 513),
    Shape(128, 2, 513),
    Shape(128, 1, 129),
    Shape(128, 1, 8191),
)
HAZARD_SHAPE = Shape(128, 1, 2001)
#: The split-KV cases' long context (16 heads keep the certified reference quick).
SPLIT_SHAPE = Shape(16, 1, 131071)


def _hazard_shape(workload: str) -> Shape:
    return Shape(128, 2, 2001) if workload == "masked_row" else HAZARD_SHAPE


#: The default case set: (workload, shape) pairs.
DEFAULT_PLAN: tuple[tuple[str, Shape], ...] = (
    *(("mla", s) for s in DEFAULT_SHAPES),
    *((w, _hazard_shape(w)) for w in HAZARD_WORKLOADS),
)


def parse_shape(text: str) -> Shape:
    """``"HxSQxN"`` or ``"HxSQxNxDKxDV"`` -> :class:`Shape`.

    >>> parse_shape("128x2x16384")
    Shape(heads=128, s_q=2, kv_len=16384, head_dim=576, v_dim=512)
    """
    parts = str(text).lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (3, 5):
        raise ValueError(f"a shape is HEADSxS_QxKV_LEN[xDKxDV] (e.g. 128x2x16384), got {text!r}")
    return Shape(*vals)


def _base(shape: Shape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """MLA decode q (s_q, H, Dk), k (N, Dk) in float64, and the float64 scale."""
    d, n = shape.head_dim, shape.kv_len
    latent = d - 64 if d > 64 else d
    k = rng.standard_normal((n, d))
    k /= np.sqrt(np.mean(k[:, :latent] ** 2, axis=1, keepdims=True))
    q = rng.standard_normal((shape.s_q, shape.heads, d))
    scale = 1.0 / math.sqrt(d / 3.0) if d == 576 else 1.0 / math.sqrt(d)
    return q, k, scale


def make_case(workload: str, shape: Shape, seed: int = 0) -> dict[str, Any]:
    """One case's inputs: ``q``, ``k``, ``v`` (BF16), ``scale`` (float64), ``mask`` or None.

    >>> c = make_case("masked_lead", Shape(2, 1, 1536, 64, 32))
    >>> c["q"].shape, c["v"].dtype.name, int(c["mask"][..., :1024].sum())
    ((1, 2, 64), 'bfloat16', 0)
    """
    if workload not in CASE_WORKLOADS:
        raise ValueError(f"unknown case workload {workload!r}; valid: {', '.join(CASE_WORKLOADS)}")
    rng = np.random.default_rng([seed, CASE_WORKLOADS.index(workload)])
    q, k, scale = _base(shape, rng)
    n, d = shape.kv_len, shape.head_dim
    mask = None
    if shape.s_q > 1:  # multi-token decode: causal over the last s_q keys
        t = np.arange(shape.s_q)[:, None, None]
        mask = np.arange(n)[None, None, :] <= n - shape.s_q + t
    lever = d - 1  # a feature outside V (the rope part when Dv < Dk)
    if workload == "zero_vcol":
        k[:, 0] = 0.0
    elif workload == "split_masked":
        if n < 4:
            raise ValueError("case 'split_masked' needs kv_len >= 4")
        hole = (np.arange(n) < n // 4) | (np.arange(n) >= n // 2)
        mask = hole[None, None, :] if mask is None else (mask & hole[None, None, :])
        mask = np.broadcast_to(mask, (shape.s_q, 1, n))
    elif workload == "positive_v":
        latent = d - 64 if d > 64 else d
        k[:, :latent] = np.abs(k[:, :latent])
    elif workload == "masked_row":
        if shape.s_q < 2:
            raise ValueError("case 'masked_row' needs s_q >= 2 (token 0 fully masked)")
        assert mask is not None
        mask = mask.copy()
        mask[0] = False
    elif workload in ("sink", "max_jump", "masked_lead", "split_drift", "fp8_saturation"):
        if lever < shape.v_dim:
            raise ValueError(f"case {workload!r} needs head_dim > v_dim (a feature outside V)")
        q[..., lever] = 1.0 / scale  # score gains k[j, lever] nats
        k[:, lever] = 0.0
        if workload == "sink":
            k[0, lever] = _SINK_NATS
        elif workload == "max_jump":
            k[min(n - 1, n // 2 + 7), lever] = _JUMP_NATS
        elif workload == "split_drift":
            k[:, lever] = np.linspace(-_DRIFT_NATS, 0.0, n)
        elif workload == "fp8_saturation":
            k[n // 3 :, lever] = _FP8_RISE_NATS
        else:
            k[:, lever] = _LOW_NATS
            if n <= 1024:
                raise ValueError("case 'masked_lead' needs kv_len > 1024 (two masked blocks)")
            lead = np.arange(n)[None, None, :] >= 1024
            mask = lead if mask is None else (mask & lead)
            mask = np.broadcast_to(mask, (shape.s_q, 1, n))
    qb = q.astype(ml_dtypes.bfloat16)  # one rne rounding from float64
    kb = k.astype(ml_dtypes.bfloat16)
    return {
        "q": qb,
        "k": kb,
        "v": np.ascontiguousarray(kb[:, : shape.v_dim]),
        "scale": np.float64(scale),
        "mask": None if mask is None else np.ascontiguousarray(mask),
    }


def _versions() -> dict[str, str]:
    import mpmath
    import scipy

    out = {
        "amla_numerics": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ml_dtypes": ml_dtypes.__version__,
        "mpmath": mpmath.__version__,
        "scipy": scipy.__version__,
    }
    try:
        import safetensors

        out["safetensors"] = safetensors.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_cases(
    out_dir: str | os.PathLike,
    *,
    shapes: Sequence[Shape] | None = None,
    workloads: Sequence[str] | None = None,
    fmt: str = "npz",
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    long: bool = False,
) -> dict[str, Any]:
    """Write the cases and ``manifest.json`` into ``out_dir``; return the manifest.

    Parameters
    ----------
    out_dir : path-like
        Created if needed; the files arrive only once every case is written (atomic).
    shapes, workloads : sequences, optional
        Every (workload, shape) pair. With neither: :data:`DEFAULT_PLAN`; with only
        ``workloads``: ``mla`` at :data:`DEFAULT_SHAPES`, the hazards at
        :data:`HAZARD_SHAPE` (``masked_row`` at s_q 2), the split cases at
        :data:`SPLIT_SHAPE`; with only ``shapes``: every workload at those shapes (the
        split ones only with ``long``; ``masked_row`` only where s_q >= 2).
    fmt : {"npz", "safetensors"}
    seed : int
    progress : callable, optional
        ``progress(done, total, name)`` after each case.
    long : bool
        Add the long-context split cases (16 heads x N 131071) to the default set.
    """
    from amla_numerics.reference.rounded import rounded_reference
    from amla_numerics.sizes import check_case_fits

    if fmt not in ("npz", "safetensors"):
        raise ValueError(f"argument 'fmt' must be 'npz' or 'safetensors', got {fmt!r}")
    for w in workloads or ():
        if w not in CASE_WORKLOADS:
            raise ValueError(f"unknown case workload {w!r}; valid: {', '.join(CASE_WORKLOADS)}")
    if shapes is None and workloads is None:
        plan = list(DEFAULT_PLAN)
        if long:
            plan += [(w, SPLIT_SHAPE) for w in SPLIT_WORKLOADS]
    elif shapes is None:
        plan = [
            (w, s)
            for w in workloads or ()
            for s in (
                DEFAULT_SHAPES
                if w == "mla"
                else (SPLIT_SHAPE,)
                if w in SPLIT_WORKLOADS
                else (_hazard_shape(w),)
            )
        ]
    else:
        names = list(workloads or CASE_WORKLOADS)
        if workloads is None and not long:
            names = [w for w in names if w not in SPLIT_WORKLOADS]
        plan = [
            (w, s)
            for w in names
            for s in shapes
            if workloads is not None or w != "masked_row" or s.s_q >= 2
        ]

    for _, s in plan:
        check_case_fits(s.s_q, s.heads, s.kv_len, s.head_dim, s.v_dim, what=f"case shape {s.label}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _write_cases(tmp, plan, fmt, seed, progress, rounded_reference)
        out.mkdir(exist_ok=True)
        names = [c["file"] for c in manifest["cases"]] + ["manifest.json"]
        for name in names:  # the manifest last
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write_cases(
    out: Path,
    plan: Sequence[tuple[str, Shape]],
    fmt: str,
    seed: int,
    progress: Callable[[int, int, str], None] | None,
    rounded_reference: Callable[..., Any],
) -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for i, (w, s) in enumerate(plan):
        name = f"{w}_{s.label}"
        inp = make_case(w, s, seed)
        ref = rounded_reference(inp["q"], inp["k"], inp["v"], inp["scale"], mask=inp["mask"])
        arrays = {k: v for k, v in inp.items() if v is not None}
        arrays.update(
            ref=ref.out,
            ref_fp32=ref.rounded["fp32"],
            ref_bf16=ref.rounded["bf16"],
            ref_lse=ref.lse,
        )
        meta = {
            "case": name,
            "workload": w,
            "heads": str(s.heads),
            "s_q": str(s.s_q),
            "kv_len": str(s.kv_len),
            "head_dim": str(s.head_dim),
            "v_dim": str(s.v_dim),
            "seed": str(seed),
        }
        path = write_dump(out / f"{name}.{fmt}", arrays, metadata=meta)
        cases.append(
            {
                "name": name,
                "file": path.name,
                "workload": w,
                "heads": s.heads,
                "s_q": s.s_q,
                "kv_len": s.kv_len,
                "head_dim": s.head_dim,
                "v_dim": s.v_dim,
                "seed": seed,
                "shapes": {k: list(np.shape(v)) for k, v in arrays.items()},
                "dtypes": {k: np.asarray(v).dtype.name for k, v in arrays.items()},
                "sha256": _sha256(path),
                "reference_mpmath_rows": ref.n_mpmath_rows,
                "reference_max_bound_ulp_fp32": ref.max_bound_ulp_fp32,
            }
        )
        if progress:
            progress(i + 1, len(plan), name)
    manifest = _manifest(fmt, cases)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _manifest(fmt: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """``manifest.json``'s content: the generator, versions, what the reference is, how to
    check a kernel, and every case with its file's sha256."""
    return {
        "generator": "amla-numerics make-cases",
        "format": fmt,
        "versions": _versions(),
        "platform": sys.platform,
        "reference": {
            "ref": "float64 within 1e-3 FP32 ULP of the exact softmax attention of the stored "
            "inputs and scale (method='auto'), or its correctly rounded float64",
            "ref_fp32, ref_bf16": "the exact value correctly rounded (rne), certified: the "
            "certified bound's interval rounds to one value, else mpmath rows",
            "ref_lse": "float64 log-sum-exp of the scaled scores, same guarantee as ref",
            "accuracy": "per case: reference_max_bound_ulp_fp32 (largest certified bound of the "
            "fast oracle, FP32 ULPs) and reference_mpmath_rows",
        },
        "how_to_check": "add 'out' (and your kernel's 'lse', natural log, if it writes one) to "
        "each case file, then run: amla-numerics compare DIR [--variant V --block-n B] (the "
        "default verdict: the error against the declared schedule's, default fa_fp32)",
        "cases": cases,
        "files": {c["file"]: c["sha256"] for c in cases},
    }
