"""Named accuracy standards, each as its owners define it, on a kernel's output.

``compare(..., standard=NAME)`` (``amla-numerics compare --standard NAME``) judges by one of:

``schedule`` (the default)
    The error against the declared schedule's, emulated on the same inputs
    (:mod:`amla_numerics.testing.rule`).
``flash-attn``
    FlashAttention's own test rule (``tests/test_flash_attn.py`` in Dao-AILab/flash-attention):
    ``max|out - ref_d| <= 2 max|naive_d - ref_d| + fwd_atol`` with ``ref_d`` the exact answer
    cast to the output dtype, ``naive_d`` a same-precision naive attention (here the
    emulated ``naive`` variant under the schedule's policy: BF16 inputs and P, FP32
    accumulation, cast to the output dtype) and ``fwd_atol = 2 max|(ref_d + 0.3) - 0.3 -
    ref_d|`` evaluated in the output dtype (one rounding of noise). Reported as
    ``flash_attn_ratio`` = left side / right side.
``torch-sdpa``
    PyTorch's SDPA test rule (``get_tolerances`` in ``test/test_transformers.py`` of
    pytorch/pytorch): tolerances from a low-precision reference's error against the FP64
    golden, ``atol = f max(max|lp - g|, default_atol)``, ``rtol = f max(max|(lp - g) / g|,
    default_rtol)`` (NaN relative deviations, at ``g = 0``, count as ``default_rtol``;
    ``rtol > 1e30`` falls back to ``default_rtol``), then ``|out - g_d| <= atol + rtol |g_d|``
    elementwise with ``g_d`` the golden cast to the output dtype (``assertEqual``'s rule).
    Defaults per output dtype (``torch/testing/_comparison.py``): atol 1e-3 (FP16, BF16),
    1e-5 (FP32); rtol 1e-3 (FP16), 1.6e-2 (BF16), 1.3e-6 (FP32). The low-precision reference
    is the emulated ``naive`` variant under the schedule's policy, cast to the output dtype;
    the fudge factor ``f`` is :data:`TORCH_FUDGE` (PyTorch's tests set it per test). Reported
    as ``torch_sdpa_ratio`` = max over elements of ``|out - g_d| / (atol + rtol |g_d|)``.
``cann-l0``, ``cann-l1``, ``cann-l2``
    CANN's operator accuracy standard for floating-point operators (the dual-benchmark
    ratio: the kernel's error and a third-party baseline's error, both against a
    high-precision golden): ``MARE = max |a - g| / (|g| + 1e-7)``, ``MERE`` the mean of the
    same, ``RMSE``; the ratios kernel / baseline must stay within (MARE, MERE, RMSE)
    ``L0 (10, 2, 2)``, ``L1 (5, 1.5, 1.5)``, ``L2 (2, 1.2, 1.2)`` (:data:`CANN_LEVELS`). The
    baseline is the emulated schedule cast to the output dtype, or a baseline dump's output.
    The standard asks for >= 5000 / 10000 / 30000 cases per level; one dump is one case.
``bound``
    Only the schedule's a priori bound (every covered element within the bound plus one
    output ULP and two FP32 roundings).
``budget``
    Only a budgets file's limits (``--budget F --kernel K``; uncovered cases are reported,
    failed under ``--strict``).

Examples
--------
>>> import numpy as np
>>> g = np.array([1.0, -2.0, 0.5]); base = g * (1 + 2**-10)
>>> r = cann_ratios(g * (1 + 2**-9), g, base, "cann-l2")
>>> r["cann_mare_ratio"], r["cann_mere_ratio"], r["cann_rmse_ratio"]
(1.0, 1.6666666666666667, 1.6666666666666667)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "CANN_LEVELS",
    "STANDARDS",
    "cann_ratios",
    "check_standard",
    "flash_attn_ratio",
    "torch_sdpa_ratio",
]

#: Every standard ``compare`` knows.
STANDARDS: tuple[str, ...] = (
    "schedule",
    "flash-attn",
    "torch-sdpa",
    "cann-l0",
    "cann-l1",
    "cann-l2",
    "bound",
    "budget",
)

#: CANN's levels: the largest allowed kernel/baseline ratios of (MARE, MERE, RMSE).
CANN_LEVELS: dict[str, tuple[float, float, float]] = {
    "cann-l0": (10.0, 2.0, 2.0),
    "cann-l1": (5.0, 1.5, 1.5),
    "cann-l2": (2.0, 1.2, 1.2),
}


#: PyTorch's default tolerances per output dtype name (``torch/testing/_comparison.py``).
TORCH_DEFAULT_ATOL: dict[str, float] = {"float16": 1e-3, "bfloat16": 1e-3, "float32": 1e-5}
TORCH_DEFAULT_RTOL: dict[str, float] = {"float16": 1e-3, "bfloat16": 1.6e-2, "float32": 1.3e-6}

#: The fudge factor of ``torch-sdpa`` (PyTorch's SDPA output tests use 1 unless a test needs
#: more; a user whose kernel is deliberately less accurate raises it).
TORCH_FUDGE: float = 1.0


def check_standard(name: object, argument: str = "standard") -> str:
    """``name`` if it is a known standard, else a ValueError listing them."""
    if not isinstance(name, str) or name not in STANDARDS:
        raise ValueError(f"unknown {argument} {name!r}; valid: {', '.join(STANDARDS)}")
    return name


def _cast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    from amla_numerics.formats import get_format
    from amla_numerics.rounding import round_to

    if dtype == np.float64:
        return np.asarray(x, np.float64)
    return np.asarray(round_to(np.asarray(x, np.float64), get_format(dtype))).astype(dtype)


def flash_attn_ratio(out: Any, ref: np.ndarray, naive: np.ndarray) -> float:
    """FlashAttention's rule as a ratio (passes at <= 1), over the finite reference.

    >>> import numpy as np
    >>> ref = np.array([0.25, -0.5]); naive = ref + 2**-12
    >>> flash_attn_ratio(np.float32(ref + 3 * 2**-13), ref, naive)  # 1.5 x the naive error
    0.75
    >>> flash_attn_ratio(np.float32(ref + 2**-10), ref, naive)  # 4 x: over
    2.0
    """
    o = np.asarray(out)
    live = np.isfinite(ref)
    ref_d = _cast(np.where(live, ref, 0.0), o.dtype)
    naive_d = _cast(np.where(live, naive, 0.0), o.dtype)
    point3 = np.asarray(0.3).astype(o.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        noise = ((ref_d + point3) - point3).astype(np.float64) - ref_d.astype(np.float64)
        fwd_atol = 2.0 * float(np.max(np.abs(noise[live]))) if live.any() else 0.0
        out_err = np.abs(o.astype(np.float64) - ref_d.astype(np.float64))[live]
        ref_err = np.abs(naive_d.astype(np.float64) - ref_d.astype(np.float64))[live]
    if not out_err.size:
        return 0.0
    e = float(np.max(np.where(np.isfinite(out_err), out_err, np.inf)))
    limit = 2.0 * float(np.max(ref_err)) + fwd_atol
    if e == 0:
        return 0.0
    return e / limit if limit > 0 else float("inf")


def cann_ratios(out: Any, golden: np.ndarray, baseline: Any, level: str) -> dict[str, float]:
    """CANN's MARE/MERE/RMSE ratios (kernel / baseline) divided by the level's thresholds:
    each passes at <= 1 (module docstring)."""
    if level not in CANN_LEVELS:
        raise ValueError(f"unknown CANN level {level!r}; valid: {', '.join(CANN_LEVELS)}")
    live = np.isfinite(golden)
    g = np.asarray(golden, np.float64)[live]
    out_figs = []
    for a in (out, baseline):
        d = np.abs(np.asarray(a).astype(np.float64)[live] - g)
        d = np.where(np.isfinite(d), d, np.inf)
        rel = d / (np.abs(g) + 1e-7)
        with np.errstate(over="ignore"):
            out_figs.append(
                (
                    float(np.max(rel)) if rel.size else 0.0,
                    float(np.mean(rel)) if rel.size else 0.0,
                    float(np.sqrt(np.mean(d**2))) if d.size else 0.0,
                )
            )
    (k_mare, k_mere, k_rmse), (b_mare, b_mere, b_rmse) = out_figs
    res = {}
    for name, k, b, lim in zip(
        ("cann_mare_ratio", "cann_mere_ratio", "cann_rmse_ratio"),
        (k_mare, k_mere, k_rmse),
        (b_mare, b_mere, b_rmse),
        CANN_LEVELS[level],
        strict=True,
    ):
        ratio = (k / b) if b > 0 else (0.0 if k == 0 else float("inf"))
        res[name] = ratio / lim
    return res


def torch_sdpa_ratio(
    out: Any, ref: np.ndarray, low: np.ndarray, fudge: float = TORCH_FUDGE
) -> float:
    """PyTorch's SDPA rule as a ratio (passes at <= 1), over the finite reference.

    ``ref`` is the float64 golden, ``low`` the low-precision reference (module docstring).

    >>> import numpy as np
    >>> g = np.array([0.5, -0.25]); low = g + 2.0**-9  # deviation 2**-9 > default atol 1e-3
    >>> o = np.asarray(g + 2.0**-10, np.float32)
    >>> torch_sdpa_ratio(o, g, low)  # atol 2**-9, rtol 2**-7: limit 2**-8 at g = -0.25
    0.25
    >>> torch_sdpa_ratio(np.asarray(g + 2.0**-6, np.float32), g, low) > 1
    True
    """
    o = np.asarray(out)
    name = o.dtype.name
    if name not in TORCH_DEFAULT_ATOL:
        name = "float32"  # wider outputs: PyTorch's float32 defaults
    live = np.isfinite(ref)
    if not live.any():
        return 0.0
    g = np.asarray(ref, np.float64)[live]
    lp = np.asarray(low, np.float64)[live]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dev = lp - g
        atol = float(np.max(np.abs(dev))) if dev.size else 0.0
        rel = np.abs(dev / g)
        rel = np.where(np.isnan(rel), TORCH_DEFAULT_RTOL[name], rel)
        rtol = float(np.max(rel)) if rel.size else 0.0
    atol = fudge * max(atol, TORCH_DEFAULT_ATOL[name])
    rtol = fudge * max(rtol, TORCH_DEFAULT_RTOL[name])
    if rtol > 1e30:
        rtol = TORCH_DEFAULT_RTOL[name]
    g_d = _cast(g, o.dtype).astype(np.float64) if o.dtype != np.float64 else g
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.abs(o.astype(np.float64)[live] - g_d)
        err = np.where(np.isfinite(err), err, np.inf)
        ratio = err / (atol + rtol * np.abs(g_d))
    return float(np.max(ratio))
