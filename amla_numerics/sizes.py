"""Size guards: estimate a computation's memory and time before starting it.

Every place where users pass sizes (report ``--kv-lens/--rows/--head-dims``, ``make-cases
--shapes``, ``compare`` on a dump) asks :func:`check_fits` first: what cannot fit in the
memory available is refused with one sentence (a ValueError: exit 2 on the command line),
before any allocation; what fits but is long gets an estimate the caller can show.

The models are deliberately simple upper estimates, calibrated on this repository's 2-core
development machine (``experiments/bench_reference.py``):

- reference (certified fast oracle, keys streamed in blocks of
  :data:`amla_numerics.reference.fast.KEY_BLOCK`): the inputs as float64
  (``8 (M Dk + N (Dk + Dv))``, an upper estimate: BF16 keys and values stay 2 bytes and
  are converted block by block; a mask adds ``8 M N``), the output, and per key block about
  12 float64 ``M x block`` arrays (scores, weights, 4 weight limbs, dd temporaries); time about
  ``4e-11 s`` per multiply-add of ``M N (Dk + Dv)`` plus ``2.5e-7 s`` per score (the
  double-double exp and the limb splits).
- emulator (one variant): ``M x N`` float64 scores, weights and their casts (about 8
  arrays; the ``naive`` variant materialises all of them), same time model.

Examples
--------
>>> c = reference_cost(rows=16, kv_len=2048, head_dim=576, v_dim=512)
>>> c.bytes < 2**30, c.seconds < 5
(True, True)
>>> check_fits(reference_cost(16, 10_000_000, 576, 576), "report --kv-lens 10000000",
...            available=8 * 2**30)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: report --kv-lens 10000000 needs about ... GiB of memory, more than the 8.0 GiB ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "KEY_BLOCK",
    "Cost",
    "available_memory",
    "case_cost",
    "check_case_fits",
    "check_fits",
    "check_grid",
    "check_reference_fits",
    "emulator_cost",
    "reference_cost",
]

#: Keys per block of the streamed reference (:data:`amla_numerics.reference.fast.KEY_BLOCK`).
KEY_BLOCK = 1 << 12
_GEMM_S = 4e-11
_SCORE_S = 2.5e-7
_SAFETY = 0.8  # refuse above this share of the available memory


@dataclass(frozen=True)
class Cost:
    """Estimated peak memory (bytes) and time (seconds) of one computation."""

    bytes: int
    seconds: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(max(self.bytes, other.bytes), self.seconds + other.seconds)


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; physical pages as a fallback)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def reference_cost(
    rows: int, kv_len: int, head_dim: int, v_dim: int, batch: int = 1, *, masked: bool = False
) -> Cost:
    """Estimate of :func:`amla_numerics.reference.attention` (method "auto") on one problem."""
    m, n, b = int(rows), int(kv_len), int(batch)
    blk = min(n, KEY_BLOCK)
    # the float64 copies and the exact dot products' integer-limb copies of q and k
    inputs = 3 * 8 * b * (m * head_dim + n * (head_dim + v_dim))
    work = 8 * m * blk * (12 + (1 if masked else 0)) + 8 * m * n * (1 if masked else 0)
    outputs = 8 * 4 * b * m * v_dim
    secs = b * (_GEMM_S * m * n * (head_dim + 2 * v_dim) + _SCORE_S * m * n)
    return Cost(inputs + work + outputs, secs)


def emulator_cost(rows: int, kv_len: int, head_dim: int, v_dim: int, batch: int = 1) -> Cost:
    """Estimate of one emulated variant (:func:`amla_numerics.flash.attention`)."""
    m, n, b = int(rows), int(kv_len), int(batch)
    inputs = 8 * b * (m * head_dim + n * (head_dim + v_dim)) * 2
    work = 8 * b * m * n * 8
    secs = b * (2 * _GEMM_S * m * n * (head_dim + v_dim) + 0.2 * _SCORE_S * m * n)
    return Cost(inputs + work, secs)


def case_cost(s_q: int, heads: int, kv_len: int, head_dim: int, v_dim: int) -> Cost:
    """Estimate of writing one golden case (:func:`amla_numerics.testing.cases.make_case`
    and its certified reference): the float64 inputs and their BF16 copies, a causal mask,
    the reference (:func:`reference_cost`) and its rounded outputs.

    >>> case_cost(1, 128, 2001, 576, 512).bytes < 2**30
    True
    """
    rows = int(s_q) * int(heads)
    n, d, dv = int(kv_len), int(head_dim), int(v_dim)
    inputs = 10 * (rows * d + n * d) + 2 * n * dv + int(s_q) * n
    ref = reference_cost(rows, n, d, dv, masked=s_q > 1)
    outputs = 8 * 4 * rows * dv
    return Cost(inputs + ref.bytes + outputs, ref.seconds)


def check_case_fits(
    s_q: int,
    heads: int,
    kv_len: int,
    head_dim: int,
    v_dim: int,
    *,
    what: str = "the case",
    available: int | None = None,
) -> Cost:
    """:func:`check_fits` of :func:`case_cost`."""
    return check_fits(case_cost(s_q, heads, kv_len, head_dim, v_dim), what, available=available)


def _gib(x: float) -> str:
    return f"{x / 2**30:.1f}"


def check_fits(cost: Cost, what: str, *, available: int | None = None) -> Cost:
    """Return ``cost`` if it fits in memory, else raise ValueError (one sentence)."""
    avail = available_memory() if available is None else int(available)
    if cost.bytes > _SAFETY * avail:
        raise ValueError(
            f"{what} needs about {_gib(cost.bytes)} GiB of memory, more than the "
            f"{_gib(avail)} GiB available; use fewer query rows, keys or a smaller head dim"
        )
    return cost


def check_reference_fits(
    rows: int,
    kv_len: int,
    head_dim: int,
    v_dim: int,
    batch: int = 1,
    *,
    what: str = "the reference",
    available: int | None = None,
) -> Cost:
    """:func:`check_fits` of :func:`reference_cost`."""
    return check_fits(
        reference_cost(rows, kv_len, head_dim, v_dim, batch), what, available=available
    )


def check_grid(
    head_dims: tuple[int, ...],
    kv_lens: tuple[int, ...],
    rows: int,
    n_variants: int,
    n_cases: int,
    *,
    available: int | None = None,
) -> Cost:
    """The report grid: refuse (ValueError) a case whose reference or emulation cannot fit;
    return the estimated peak memory of the largest case and the total time.

    >>> check_grid((64,), (10_000_000,), 16, 9, 1, available=8 * 2**30)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a report case with head dim 64, 10000000 keys and 16 rows needs about ...
    """
    d, n = max(head_dims), max(kv_lens)
    worst = reference_cost(rows, n, d, d) + emulator_cost(rows, n, d, d)
    what = f"a report case with head dim {d}, {n} keys and {rows} rows"
    check_fits(worst, what, available=available)
    total = 0.0
    for hd in head_dims:
        for kv in kv_lens:
            one = reference_cost(rows, kv, hd, hd).seconds
            total += one + n_variants * emulator_cost(rows, kv, hd, hd).seconds
    per_combo = max(1, len(head_dims) * len(kv_lens))
    return Cost(worst.bytes, total * n_cases / per_combo)
