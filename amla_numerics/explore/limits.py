"""Closed-form hazard-free conditions of a rescaling design (no emulation).

Every condition is derived from the recurrence of ``docs/numerics.md``; the tests check
each against the emulator (a point just inside a limit has no hazard, just outside has).

* **P saturation.** The cast sees ``X' = S * X`` with ``X <= P_max * fold``: ``P_max = 1``
  with a fresh max, ``2**tau`` (``lazy``, ``fa4``: tau in log2 units) or ``e**tau``
  (``skip_scale``: nats) with a stale max; ``fold = r^_max = 1.4140625`` (``2**0.5`` rounded
  to BF16, ties away) for AMLA's folded ``P r^``. The cast overflows its finite range iff
  ``X'`` is beyond :func:`overflow_threshold` (``max_finite`` plus half an ulp, the tie
  included or not by the rounding mode): E4M3 (448) overflows above 464, E5M2 (57344) at
  61440 and above. So the largest saturation-free threshold is
  ``tau_max = log_base(threshold / (S fold))`` (:func:`tau_max`), none when it is negative.
* **The clamp's reach** (AMLA's ``dn >= -30``): ``n = rna(-m log2 e)`` is within 1/2 of
  ``-m log2 e``, so a per-block growth of the max below ``30`` log2 units (``30 ln 2 =
  20.79`` nats) never clamps and one above ``31`` (21.49 nats) always does
  (:func:`clamp_reach`).
* **The integer add's zero/subnormal region.** ``N = rna((dnc + eps) 2**23)`` with
  ``dnc >= -30`` and ``|eps| < 1`` is at least ``-31 * 2**23``: an O element of magnitude at
  least ``2**(31 - 126) = 2**-95`` keeps a normal exponent; zeros and subnormals are always
  hazards (:func:`int_add_min_safe`).
* **FP32 overflow.** ``l <= N P_max``, ``|O| <= N P_max fold max|V|`` and the scaled tile
  ``S P_max fold`` must stay below FP32's ``max_finite`` (:func:`fp32_overflow_free`).

Examples
--------
>>> overflow_threshold("e4m3", "rne")
(464.0, False)
>>> round(tau_max("e4m3", "rne", 256.0, "log2"), 4)  # FA4's static scale 2**8
0.858
>>> round(tau_max("e4m3", "rne", 1.0, "ln"), 4)  # skip-scale, E4M3 P, no scale
6.1399
>>> tau_max("e4m3", "rne", 512.0, "log2") is None  # saturates even with a fresh max
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from amla_numerics.formats import get_format
from amla_numerics.rounding import round_to
from amla_numerics.variants import AMLA_VARIANTS, TAU_UNITS, spec

__all__ = [
    "AMLA_FOLD_MAX",
    "FP32_MAX",
    "Conditions",
    "clamp_reach",
    "conditions",
    "fold_max",
    "fp32_overflow_free",
    "int_add_min_safe",
    "overflow_threshold",
    "p_max",
    "tau_max",
]

#: FP32's largest finite value.
FP32_MAX: float = float(np.finfo(np.float32).max)

#: The largest AMLA residual ``r^``: ``r <= 2**0.5 (1 + 2**-20)`` rounded to BF16 with ties
#: away (the kernel's ``CAST_ROUND``), the same as ``2**0.5`` itself rounded: 1.4140625.
AMLA_FOLD_MAX: float = float(
    round_to(np.float64(math.sqrt(2.0) * (1.0 + 2.0**-20)), get_format("bf16"), "rna")
)
_FP32R_FOLD_MAX = math.sqrt(2.0) * (1.0 + 2.0**-20)  # amla_fp32r folds the FP32 r
_BASE = {"log2": 2.0, "ln": math.e}


def overflow_threshold(fmt: str, rounding: str) -> tuple[float, bool]:
    """Where a cast to ``fmt`` with ``rounding`` leaves the finite range.

    Returns ``(t, inclusive)``: ``|x| > t`` overflows (saturates, for FP8), and ``|x| = t``
    does too when ``inclusive``. ``t`` is ``max_finite`` plus half its ulp (the tie
    overflows under ``rna``, and under ``rne`` when ``max_finite``'s significand is odd).
    Only the round-to-nearest modes (the P casts') are defined: a directed rounding clips
    to ``max_finite`` without overflowing, which no saturation count would show.

    Examples
    --------
    >>> overflow_threshold("e5m2", "rne"), overflow_threshold("e4m3", "rna")
    ((61440.0, True), (464.0, True))
    """
    f = get_format(fmt)
    top = float(f.max_finite)
    e = math.floor(math.log2(top))
    ulp = 2.0 ** (e - f.p + 1)
    if rounding not in ("rne", "rna"):
        raise ValueError(f"argument 'rounding' must be 'rne' or 'rna', got {rounding!r}")
    odd = int(top / ulp) % 2 == 1
    return top + ulp / 2, rounding == "rna" or odd


def fold_max(variant: str) -> float:
    """The largest factor folded into P before its cast: ``r^_max`` for AMLA, else 1.

    Examples
    --------
    >>> fold_max("amla"), fold_max("skip_scale")
    (1.4140625, 1.0)
    """
    if variant not in AMLA_VARIANTS:
        return 1.0
    return _FP32R_FOLD_MAX if spec(variant).fold == "r_fp32" else AMLA_FOLD_MAX


def p_max(variant: str, tau: float | None) -> float:
    """The largest P before the fold and the scale: ``base**tau`` with a stale max, else 1.

    Examples
    --------
    >>> p_max("lazy", 8.0), round(p_max("skip_scale", 6.0), 2), p_max("amla", None)
    (256.0, 403.43, 1.0)
    """
    units = TAU_UNITS.get(variant)
    if units is None:
        return 1.0
    if tau is None:
        raise ValueError(f"variant {variant!r} needs a threshold 'tau'")
    return _BASE[units] ** float(tau)


def tau_max(fmt: str, rounding: str, p_scale: float, units: str, fold: float = 1.0) -> float | None:
    """The largest saturation-free threshold (in ``units``) for a cast format and scale.

    ``S fold base**tau`` must not overflow the cast (:func:`overflow_threshold`); None when
    even ``tau = 0`` overflows. The value is the boundary itself, which is saturation-free
    unless the threshold is ``inclusive``.
    """
    if units not in _BASE:
        raise ValueError(f"argument 'units' must be 'log2' or 'ln', got {units!r}")
    if not (p_scale > 0 and math.isfinite(p_scale)):
        raise ValueError(f"argument 'p_scale' must be finite and > 0, got {p_scale!r}")
    t, _ = overflow_threshold(fmt, rounding)
    ratio = t / (float(p_scale) * fold)
    if ratio < 1.0:
        return None
    return math.log(ratio) / math.log(_BASE[units])


def clamp_reach(dn_clamp: int = -30) -> tuple[float, float]:
    """Per-block growth of the row max (nats) below which AMLA's clamp never acts, and
    above which it always does: ``(|c| ln 2, (|c| + 1) ln 2)``.

    Examples
    --------
    >>> [round(x, 3) for x in clamp_reach()]
    [20.794, 21.488]
    """
    c = abs(int(dn_clamp))
    return c * math.log(2.0), (c + 1) * math.log(2.0)


def int_add_min_safe(dn_clamp: int = -30) -> float:
    """Smallest ``|O|`` that the integer add keeps normal at every step: ``2**(|c| + 1 - 126)``
    (the increment ``N >= (c - 1) 2**23`` with ``|eps| < 1``); below it, and at 0, a hazard.

    Examples
    --------
    >>> int_add_min_safe() == 2.0**-95
    True
    """
    return 2.0 ** (abs(int(dn_clamp)) + 1 - 126)


def fp32_overflow_free(
    kv_len: int, pmax: float, fold: float, v_max: float, p_scale: float = 1.0
) -> bool:
    """Whether ``l <= N P_max``, ``|O| <= N P_max fold max|V|`` and ``S P_max fold`` all
    stay below FP32's largest finite value.

    Examples
    --------
    >>> fp32_overflow_free(4096, 2.0**8, 1.0, 10.0), fp32_overflow_free(4096, 2.0**120, 1.0, 10.0)
    (True, False)
    """
    worst = kv_len * pmax * fold
    return bool(worst < FP32_MAX and worst * v_max < FP32_MAX and p_scale * pmax * fold < FP32_MAX)


@dataclass(frozen=True)
class Conditions:
    """The closed-form hazard-free conditions of one design point.

    Attributes
    ----------
    p_max : float
        The largest value the P cast sees, ``S * fold * P_max``.
    p_threshold : float
        The cast format's overflow threshold (:func:`overflow_threshold`).
    saturation_free : bool
        ``p_max`` below the threshold (at it, unless the tie overflows).
    tau_max : float or None
        For a stale-max variant: the largest saturation-free threshold in its units at this
        format and scale (None: none, or not a stale-max variant).
    tau_units : str or None
        ``"log2"`` or ``"ln"`` (None for the other variants).
    clamp_free_growth, clamp_sure_growth : float or None
        :func:`clamp_reach` for the AMLA variants with a clamp (None otherwise).
    int_add_min_safe : float or None
        :func:`int_add_min_safe` for the unguarded AMLA variants (None otherwise).
    fp32_overflow_free : bool
        :func:`fp32_overflow_free` on the workload's ``N`` and ``max|V|``.
    """

    p_max: float
    p_threshold: float
    saturation_free: bool
    tau_max: float | None
    tau_units: str | None
    clamp_free_growth: float | None
    clamp_sure_growth: float | None
    int_add_min_safe: float | None
    fp32_overflow_free: bool

    @property
    def hazard_free(self) -> bool:
        """No saturation and no FP32 overflow whatever the data (the integer add's and the
        clamp's regions depend on the data: see their fields)."""
        return self.saturation_free and self.fp32_overflow_free

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (with ``hazard_free``)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["hazard_free"] = self.hazard_free
        return d


def conditions(
    variant: str,
    tau: float | None,
    p_cast: str,
    p_cast_rounding: str,
    p_scale: float,
    *,
    kv_len: int,
    v_max: float,
    dn_clamp: int | None = -30,
) -> Conditions:
    """The :class:`Conditions` of one design point on a workload of ``kv_len`` keys.

    Examples
    --------
    >>> c = conditions("lazy", 8.0, "e4m3", "rne", 256.0, kv_len=4096, v_max=4.0)
    >>> c.p_max, c.saturation_free, round(c.tau_max, 3)
    (65536.0, False, 0.858)
    >>> conditions("skip_scale", 6.0, "e4m3", "rne", 1.0, kv_len=4096, v_max=4.0).saturation_free
    True
    """
    units = TAU_UNITS.get(variant)
    fold = fold_max(variant)
    pm = p_max(variant, tau)
    t, inclusive = overflow_threshold(p_cast, p_cast_rounding)
    x = float(p_scale) * fold * pm
    sat_free = x < t or (x == t and not inclusive)
    tmax = tau_max(p_cast, p_cast_rounding, p_scale, units, fold) if units else None
    amla = variant in AMLA_VARIANTS
    reach = clamp_reach(dn_clamp) if amla and dn_clamp is not None else (None, None)
    guard = amla and spec(variant).guard
    if guard:
        reach = (None, None)
    safe = int_add_min_safe(dn_clamp or 0) if amla and not guard else None
    return Conditions(
        p_max=x,
        p_threshold=t,
        saturation_free=bool(sat_free),
        tau_max=tmax,
        tau_units=units,
        clamp_free_growth=reach[0],
        clamp_sure_growth=reach[1],
        int_add_min_safe=safe,
        fp32_overflow_free=fp32_overflow_free(kv_len, pm, fold, v_max, p_scale),
    )
