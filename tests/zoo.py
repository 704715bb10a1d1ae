"""A zoo of independent numpy attention kernels, correct and buggy, to test the verdicts.

Every kernel is written here from the algorithm's description (``docs/numerics.md``, the
AMLA card), never through :mod:`amla_numerics.flash`: the verdict must recognise a correct
kernel it did not write and catch a buggy one. A kernel takes the golden case's arrays
(``q`` (..., Dk) rows, ``k`` (N, Dk), ``v`` (N, Dv), ``scale``, ``mask`` broadcastable to
(rows, N) or None) and returns ``(out, lse)`` in its output dtype (``out_dtype``).

Correct: float32 FlashAttention (BF16 P, FP32 accumulation) with KV blocks of 64, 128 and
512 in both orders, exp in float64 rounded to float32, float32 P, a two-pass softmax, the
correctly rounded answer, and AMLA (exponent-add rescale with compensation ``c = 1.5``);
each with float32 and BF16 output. Buggy: the lse taken one block early, AMLA with
``c = 1.0``, AMLA with the compensation's sign flipped, AMLA without compensation, the last
partial KV block dropped, the causal mask one key off, a missed rescale, O accumulated in
BF16, the scale applied twice on one head, and a wrong scale (``1/sqrt(Dk)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

BF16 = ml_dtypes.bfloat16
LOG2E = 1.0 / math.log(2.0)


def bf16_rne(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 (round to nearest even), back as float32."""
    return np.asarray(x, np.float32).astype(BF16).astype(np.float32)


def bf16_rna(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16, ties away from zero (Ascend ``CAST_ROUND``), on the bits."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = ((b + np.uint32(0x8000)) & np.uint32(0xFFFF0000)).astype(np.uint32)
    return r.view(np.float32)


@dataclass(frozen=True)
class Kernel:
    """A zoo kernel: its name, whether it is correct, the schedule it declares, the code."""

    name: str
    correct: bool
    fn: Callable[..., tuple[np.ndarray, np.ndarray]]
    out_dtype: Any = np.float32
    variant: str | None = None  # the schedule the kernel declares (None: the default)
    block_n: int = 512
    note: str = ""  # for a buggy kernel no accuracy verdict can fail: why
    #: golden workloads on which the scheme itself is known to fail (a published hazard)
    hazards: tuple[str, ...] = ()

    def __call__(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        lead = q.shape[:-1]
        rows = q.reshape(-1, q.shape[-1])
        m = None
        if mask is not None:
            m = np.broadcast_to(np.asarray(mask, bool), (*lead, k.shape[0])).reshape(
                rows.shape[0], k.shape[0]
            )
        out, lse = self.fn(rows, k, v, float(scale), m)
        out = np.asarray(out, np.float32).reshape(*lead, v.shape[-1])
        if np.dtype(self.out_dtype) == np.dtype(BF16):
            out = out.astype(BF16)  # rne, as numpy casts
        return out, np.asarray(lse, np.float32).reshape(lead)


# -- float32 FlashAttention, written from its recurrence ------------------------------------


def _scores(q: np.ndarray, k: np.ndarray, scale: float, mask: Any, lo: int, hi: int) -> np.ndarray:
    s = (q.astype(np.float32) @ k[lo:hi].astype(np.float32).T) * np.float32(scale)
    if mask is not None:
        s = np.where(mask[:, lo:hi], s, np.float32(-np.inf))
    return s.astype(np.float32)


def flash_fp32(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    mask: Any,
    *,
    block: int = 512,
    reverse: bool = False,
    p_cast: Callable[[np.ndarray], np.ndarray] | None = bf16_rne,
    exp64: bool = False,
    lse_early: bool = False,
    drop_partial: bool = False,
    skip_rescale: bool = False,
    o_bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Online-softmax FlashAttention in float32 (the options are the bugs and the variations)."""
    n = k.shape[0]
    stop = (n // block) * block if drop_partial else n
    blocks = [(lo, min(lo + block, stop)) for lo in range(0, stop, block)]
    if reverse:
        blocks = blocks[::-1]
    rows = q.shape[0]
    m = np.full((rows, 1), -np.inf, np.float32)
    lsum = np.zeros((rows, 1), np.float32)
    o = np.zeros((rows, v.shape[1]), np.float32)
    v32 = v.astype(np.float32)
    lse_prev = None
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for i, (lo, hi) in enumerate(blocks):
            s = _scores(q, k, scale, mask, lo, hi)
            m_new = np.maximum(m, s.max(axis=1, keepdims=True))
            safe = np.where(np.isfinite(m_new), m_new, np.float32(0))
            if exp64:
                p = np.exp((s - safe).astype(np.float64)).astype(np.float32)
                a = np.exp((m - safe).astype(np.float64)).astype(np.float32)
            else:
                p = np.exp(s - safe)
                a = np.exp(m - safe)
            lsum = a * lsum + p.sum(axis=1, keepdims=True, dtype=np.float32)
            pc = p if p_cast is None else p_cast(p)
            o = (o if skip_rescale else a * o) + pc @ v32[lo:hi]
            if o_bf16:
                o = bf16_rne(o)
            m = m_new
            if i == len(blocks) - 2:
                lse_prev = m[:, 0] + np.log(lsum[:, 0])
        out = o / lsum
        lse = m[:, 0] + np.log(lsum[:, 0])
    if lse_early and lse_prev is not None:
        lse = lse_prev
    return out, lse


def two_pass(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: the row max and sum over all keys; pass 2: BF16 P per 512-key block, P V."""
    n = k.shape[0]
    m = np.full((q.shape[0], 1), -np.inf, np.float32)
    lsum = np.zeros((q.shape[0], 1), np.float32)
    with np.errstate(invalid="ignore"):
        for lo in range(0, n, 512):
            m = np.maximum(m, _scores(q, k, scale, mask, lo, lo + 512).max(axis=1, keepdims=True))
        o = np.zeros((q.shape[0], v.shape[1]), np.float32)
        for lo in range(0, n, 512):
            p = np.exp(_scores(q, k, scale, mask, lo, lo + 512) - m)
            lsum += p.sum(axis=1, keepdims=True, dtype=np.float32)
            o += bf16_rne(p) @ v[lo : lo + 512].astype(np.float32)
    return o / lsum, m[:, 0] + np.log(lsum[:, 0])


def correctly_rounded(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The certified reference (the kernel's dtype rounds it once: correctly rounded)."""
    from amla_numerics.reference import attention

    out, lse = attention(q, k, v, scale, mask=mask, return_lse=True)
    return np.asarray(out), np.asarray(lse)


def wrong_scale(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Uses ``1/sqrt(Dk)`` whatever the caller's scale."""
    return flash_fp32(q, k, v, 1.0 / math.sqrt(q.shape[-1]), mask)


def scale_twice_one_head(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Row 1 (one head of the first token) gets ``scale**2``."""
    out, lse = flash_fp32(q, k, v, scale, mask)
    sub = None if mask is None else mask[1:2]
    o1, l1 = flash_fp32(q[1:2], k, v, scale * scale, sub)
    out[1:2], lse[1:2] = o1, l1
    return out, lse


def causal_off_by_one(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Every masked run of keys starts one key late (the first masked key leaks in)."""
    if mask is not None:
        leak = mask.copy()
        leak[:, 1:] |= mask[:, :-1]
        mask = leak
    return flash_fp32(q, k, v, scale, mask)


# -- AMLA, written from the paper's algorithm (the AMLA card, sections 3-4) ------------------


def amla(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    mask: Any,
    *,
    block: int = 512,
    c: float = 1.5,
    sign: float = 1.0,
    compensate: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """AMLA: O rescaled by an INT32 add of ``N_j`` to its FP32 bits, r folded into P.

    ``n_j = round(-m_j log2 e)`` (half away), ``r_j = exp(m_j + n_j ln 2)``, ``r^ =
    bf16(r)``, ``A_j = bf16(P_j r^_j)``, ``N_j = round((max(dn_j, -30) + eps_j) 2**23)``
    with ``eps_j = c (cof_{j-1}/cof_j - 1) + 1e-6``, ``cof_j = r_j / r^_j``; out = O / (l r^).
    A block with no live key for a row leaves that row's state alone, and before the
    division O elements above 1e10 or NaN are set to 0, as the CANN kernel does.
    """
    n = k.shape[0]
    rows = q.shape[0]
    m = np.full((rows, 1), -np.inf, np.float32)
    lsum = np.zeros((rows, 1), np.float32)
    o = np.zeros((rows, v.shape[1]), np.float32)
    v32 = v.astype(np.float32)
    n_prev = np.zeros((rows, 1), np.float32)
    cof_prev = np.ones((rows, 1), np.float32)
    r_hat = np.ones((rows, 1), np.float32)
    started = np.zeros((rows, 1), bool)  # a row's first block with a live key stores O
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            s = _scores(q, k, scale, mask, lo, hi)
            live = np.isfinite(s.max(axis=1, keepdims=True))  # a fully masked block is skipped
            m_new = np.where(live, np.maximum(m, s.max(axis=1, keepdims=True)), m)
            safe = np.where(np.isfinite(m_new), m_new, np.float32(0))
            p = np.where(live, np.exp(s - safe), np.float32(0))
            a = np.where(started, np.exp(m - safe), np.float32(0))
            lsum = np.where(live, a * lsum + p.sum(axis=1, keepdims=True, dtype=np.float32), lsum)
            t = -safe * np.float32(LOG2E)
            nj = (np.sign(t) * np.floor(np.abs(t) + np.float32(0.5))).astype(np.float32)
            r = np.exp(safe + nj * np.float32(math.log(2.0))).astype(np.float32)
            rh = bf16_rna(r)
            cof = (r / rh).astype(np.float32)
            a_tile = bf16_rna(p * rh)
            dn = np.maximum(nj - n_prev, np.float32(-30))
            eps = np.float32(sign * c) * (cof_prev / cof - np.float32(1)) + np.float32(1e-6)
            if not compensate:
                eps = np.full_like(eps, np.float32(1e-6))
            big_n = np.round((dn + eps).astype(np.float64) * 2.0**23).astype(np.int32)
            add = live & started
            o = np.where(add, (o.view(np.int32) + np.where(add, big_n, 0)).view(np.float32), o)
            o = np.where(live, o + a_tile @ v32[lo:hi], o)
            m = m_new
            n_prev = np.where(live, nj, n_prev)
            cof_prev = np.where(live, cof, cof_prev)
            r_hat = np.where(live, rh, r_hat)
            started |= live
        # the CANN kernel's clean-up before the division: |O| > 1e10 or NaN -> 0
        o = np.where(np.isnan(o) | (np.abs(o) > np.float32(1e10)), np.float32(0), o)
        out = o / (lsum * r_hat)
        lse = m[:, 0] + np.log(lsum[:, 0])
    return out, lse


def _k(name: str, correct: bool, fn: Callable, **kw: Any) -> list[Kernel]:
    """The float32-output kernel and (for correct ones) its BF16-output twin."""
    ks = [Kernel(name, correct, fn, **kw)]
    if correct:
        ks.append(Kernel(name + "_bf16out", correct, fn, out_dtype=BF16, **kw))
    return ks


def _p(fn: Callable, **opts: Any) -> Callable:
    def run(q: Any, k: Any, v: Any, scale: float, mask: Any) -> Any:
        return fn(q, k, v, scale, mask, **opts)

    return run


ZOO: tuple[Kernel, ...] = tuple(
    [
        *_k("fa32_b64", True, _p(flash_fp32, block=64)),
        *_k("fa32_b128", True, _p(flash_fp32, block=128)),
        *_k("fa32_b512", True, _p(flash_fp32, block=512)),
        *_k("fa32_b128_reverse", True, _p(flash_fp32, block=128, reverse=True)),
        *_k("fa32_b512_reverse", True, _p(flash_fp32, block=512, reverse=True)),
        *_k("fa32_exp64", True, _p(flash_fp32, exp64=True)),
        *_k("fa32_p32", True, _p(flash_fp32, p_cast=None)),
        *_k("two_pass", True, two_pass),
        *_k("correctly_rounded", True, correctly_rounded),
        # AMLA's integer add on a zero O (an all-zero V column) leaves garbage (the AMLA
        # card, section 5): the zero_vcol case must catch it
        *_k("amla", True, amla, variant="amla", hazards=("zero_vcol",)),
        Kernel("lse_one_block_early", False, _p(flash_fp32, lse_early=True)),
        Kernel(
            "amla_c1",
            False,
            _p(amla, c=1.0),
            variant="amla",
            hazards=("zero_vcol",),
            note="c = 1.0 is as accurate as c = 1.5 (both sit near the optimum 1.39-1.44); "
            "only the bit match shows it is not the declared schedule",
        ),
        Kernel(
            "amla_sign_flipped", False, _p(amla, sign=-1.0), variant="amla", hazards=("zero_vcol",)
        ),
        Kernel(
            "amla_no_compensation",
            False,
            _p(amla, compensate=False),
            variant="amla",
            hazards=("zero_vcol",),
        ),
        Kernel("dropped_partial_block", False, _p(flash_fp32, drop_partial=True)),
        Kernel("causal_off_by_one", False, causal_off_by_one),
        Kernel("missed_rescale", False, _p(flash_fp32, skip_rescale=True)),
        Kernel("bf16_accumulation", False, _p(flash_fp32, o_bf16=True)),
        Kernel("scale_twice_one_head", False, scale_twice_one_head),
        Kernel("wrong_scale", False, wrong_scale),
    ]
)


# -- the golden cases the zoo is judged on, and the verdicts --------------------------------

#: Small versions of the golden cases (MLA dims, few heads, N = 1100: no block size divides
#: it): the default test run.
FAST_CASES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("mla", (4, 2, 1100)),
    ("positive_v", (8, 1, 1100)),
    ("sink", (8, 1, 1100)),
)
#: Every default golden workload, 16 heads (the slow run and the experiment).
FULL_CASES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("mla", (16, 1, 2001)),
    ("mla", (16, 2, 2001)),
    ("mla", (4, 8, 2001)),
    ("mla", (16, 1, 513)),
    ("mla", (16, 2, 513)),
    ("mla", (16, 1, 129)),
    ("zero_vcol", (16, 1, 2001)),
    ("sink", (16, 1, 2001)),
    ("max_jump", (16, 1, 2001)),
    ("masked_lead", (16, 1, 2001)),
    ("positive_v", (16, 1, 2001)),
    ("fp8_saturation", (16, 1, 2001)),
    ("masked_row", (16, 2, 2001)),
)


def golden_cases(full: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """``(name, make_case(...))`` for :data:`FAST_CASES` or :data:`FULL_CASES`."""
    from amla_numerics.testing.cases import Shape, make_case

    out = []
    for w, (h, sq, n) in FULL_CASES if full else FAST_CASES:
        shape = Shape(h, sq, n)
        out.append((f"{w}_{shape.label}", make_case(w, shape)))
    return out


def verdicts(kernel: Kernel, cases: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any]]:
    """``(case name, Comparison)`` of ``kernel`` on every case, judged with the defaults
    (only the kernel's declared schedule: variant and block length)."""
    from amla_numerics.testing import compare

    res = []
    for name, c in cases:
        out, lse = kernel(c["q"], c["k"], c["v"], float(c["scale"]), c["mask"])
        comp = compare(
            out,
            c["q"],
            c["k"],
            c["v"],
            scale=c["scale"],
            mask=c["mask"],
            lse=lse,
            variant=kernel.variant,
            block_n=kernel.block_n,
            bit_match=False,
        )
        res.append((name, comp))
    return res
