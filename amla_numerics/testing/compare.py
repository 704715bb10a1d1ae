"""Judge a kernel's attention output against the certified reference: :func:`compare`.

``compare(out, q, k, v)`` takes the arrays exactly as the kernel saw and wrote them (any
float dtype: float64/32/16, bfloat16, FP8; never re-rounded; leading dims broadcast as in
:func:`amla_numerics.reference.attention`) and returns a :class:`Comparison`:

- ``metrics``: every figure of :func:`amla_numerics.analysis.metrics.error_metrics` (the
  condition-aware error ``cond_err_*`` in ``u_fp32 = 2**-24`` of ``sum_k p_ik |v_kj|``,
  ``row_rel_*``, ``rel_fro``, the BF16-output view ``bf16_out_*``, ``lse_err_max`` when an
  ``lse`` is given, and the secondary ULP-at-reference fields): the same code the report uses;
- ``worst``: the worst elements (index, out, ref, error, bound);
- ``passed``, ``reasons``, ``rule``: the default verdict (:mod:`amla_numerics.testing.rule`)
  against the declared schedule (``variant``, default ``"fa_fp32"``), or another
  ``standard``; ``diagnosis``: the likely cause when it fails;
- the elementwise a priori bound of the schedule (``variant``, default ``"fa_fp32"``)
  (``bound_cond_max`` on the condition-aware scale, ``bound_ratio`` = max measured/bound over
  the elements no garbage hazard of the emulated variant touched, ``bound_covered`` of them,
  ``bound_violations``; NaN when none is covered);
- ``hazards``: what the inputs and the output show (non-finite outputs where the reference is
  finite, all-zero V columns, fully masked rows), and with ``variant`` the emulated variant's
  own hazard counts;
- ``bit_match``: for each emulated variant, the fraction of elements whose bits equal the
  emulator's output cast to ``out``'s dtype (round to nearest even), and ``nearest_variant``:
  the variant with the highest fraction (ties: the smallest relative Frobenius distance
  between ``out`` and that variant's output), None below :data:`NEAREST_MIN_SHARE`. A
  kernel implementing AMLA exactly as the emulator models it matches ``amla`` bit for bit
  (under the same policy and block size).

The reference is computed once per distinct input (an in-process cache keyed by the sha256
of the exact inputs; the disk cache of :mod:`amla_numerics.reference.cache` applies when
``AMLA_NUMERICS_CACHE`` is set).

Examples
--------
>>> import numpy as np, ml_dtypes
>>> from amla_numerics import flash
>>> rng = np.random.default_rng(0)
>>> q, k, v = (rng.standard_normal(s).astype(ml_dtypes.bfloat16)
...            for s in ((4, 64), (256, 64), (256, 64)))
>>> out = flash.attention(q, k, v, "amla", block_n=128).out
>>> c = compare(out, q, k, v, block_n=128)
>>> c.nearest_variant, c.bit_match["amla"]
('amla', 1.0)
>>> bool(c.metrics.cond_err_max < 2**16), c.failures({"cond_err_max": 2**16})
(True, [])
>>> [f.metric for f in c.failures({"cond_err_max": 1.0})]  # BF16 P: far above 1 u_fp32
['cond_err_max']
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amla_numerics.analysis.boundcheck import bound_check
from amla_numerics.analysis.metrics import (
    LIMIT_METRICS,
    ErrorMetrics,
    condition_aware,
    error_metrics,
    magnitude_scale,
    reference_error,
    reference_ulp,
)
from amla_numerics.reference import AUTO_ULP_FP32
from amla_numerics.reference.cache import hash_arrays
from amla_numerics.testing.rule import (
    DEFAULT_SCHEDULE,
    MAX_FACTOR,
    RMS_FACTOR,
    RuleResult,
    schedule_rule,
)
from amla_numerics.variants import VARIANTS, check_variant

__all__ = [
    "LIMIT_METRICS",
    "NEAREST_MIN_SHARE",
    "Comparison",
    "Failure",
    "WorstElement",
    "compare",
    "default_policy",
    "reference_for",
]

#: ``nearest_variant`` is None (``none``) unless some variant matches at least this share
#: of the output elements bit for bit: below it, no emulated variant is what the kernel does.
NEAREST_MIN_SHARE: float = 0.5

_CACHE: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_CACHE_SIZE = 8
_EMU_CACHE: OrderedDict[str, Any] = OrderedDict()


@dataclass(frozen=True)
class WorstElement:
    """One output element: where, what the kernel wrote, the reference, the error."""

    index: tuple[int, ...]
    out: float
    ref: float
    cond_err: float
    mag: float
    bound: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": list(self.index),
            "out": _num(self.out),
            "ref": _num(self.ref),
            "cond_err": _num(self.cond_err),
            "mag": _num(self.mag),
            "bound": _num(self.bound),
        }


@dataclass(frozen=True)
class Failure:
    """A metric over its limit (``measured > limit``; NaN measured never passes)."""

    metric: str
    measured: float
    limit: float
    index: tuple[int, ...] = ()
    out: float = math.nan
    ref: float = math.nan

    def describe(self) -> str:
        where = ""
        if self.index:
            where = f" (worst at {list(self.index)}: out {self.out!r} vs ref {self.ref!r})"
        return f"{self.metric} measured {self.measured:.6g} > limit {self.limit:.6g}{where}"


@dataclass(frozen=True)
class Comparison:
    """Everything :func:`compare` measured (see the module docstring).

    ``ref`` and ``lse_ref`` are the float64 reference (``method="auto"``: within 1e-3 FP32
    ULP of the exact value); ``n_elements`` counts the output elements.
    """

    metrics: ErrorMetrics
    shape: tuple[int, ...]
    out_dtype: str
    worst: tuple[WorstElement, ...]
    hazards: dict[str, int]
    bit_match: dict[str, float]
    nearest_variant: str | None
    variant: str | None = None
    policy: str | None = None
    block_n: int = 512
    splits: int | None = None
    combine: str = "cann"
    bound_cond_max: float = math.nan
    bound_cond_median: float = math.nan
    bound_ratio: float = math.nan
    bound_violations: int = 0
    bound_covered: int = 0
    emulated_hazards: dict[str, int] = field(default_factory=dict)
    rule: RuleResult | None = None
    standard: str = "schedule"
    standard_figures: dict[str, float] = field(default_factory=dict)
    diagnosis: str = ""
    ref: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    lse_ref: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def worst_index(self) -> tuple[int, ...]:
        return self.metrics.worst_index

    @property
    def schedule(self) -> str:
        """The schedule the default rule judged against (the variant, or the default)."""
        return self.rule.schedule if self.rule is not None else (self.variant or DEFAULT_SCHEDULE)

    def checks(self) -> dict[str, tuple[float, float]]:
        """The verdict's figures under ``standard``: ``{metric: (measured, limit)}``."""
        if self.rule is None:
            return {}
        if self.standard == "schedule":
            vals, lims = self.rule.values(), self.rule.limits()
            return {k: (vals[k], lims[k]) for k in vals}
        out = {"degenerate": (1.0 if self.rule.degenerate else 0.0, 0.0)}
        if self.standard == "bound" and not math.isnan(self.rule.bound_ratio):
            out["schedule_bound_ratio"] = (self.rule.bound_ratio, 1.0)
        out.update({k: (v, 1.0) for k, v in self.standard_figures.items()})
        return out

    @property
    def passed(self) -> bool:
        """The verdict under ``standard`` (default: :mod:`amla_numerics.testing.rule`);
        True when not judged."""
        return all(m <= lim for m, lim in self.checks().values())

    @property
    def reasons(self) -> tuple[str, ...]:
        """One sentence per broken rule of the verdict."""
        if self.rule is None:
            return ()
        if self.standard == "schedule" or self.rule.degenerate:
            return self.rule.reasons
        return tuple(
            f"{k} is {m:.3g}, over its limit {lim:g} (standard {self.standard})"
            for k, (m, lim) in self.checks().items()
            if not m <= lim
        )

    def value(self, metric: str) -> float:
        """A limit metric's measured value (:data:`LIMIT_METRICS`)."""
        if metric == "bound_ratio":
            return self.bound_ratio
        if metric not in LIMIT_METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(LIMIT_METRICS)}")
        return float(getattr(self.metrics, metric))

    def failures(self, limits: Mapping[str, float]) -> list[Failure]:
        """Every limit exceeded. Non-finite outputs always fail (metric ``n_nonfinite``)."""
        w = self.worst[0] if self.worst else None
        loc: dict[str, Any] = {"index": w.index, "out": w.out, "ref": w.ref} if w else {}
        fails = []
        if self.metrics.n_nonfinite:
            fails.append(Failure("n_nonfinite", float(self.metrics.n_nonfinite), 0.0, **loc))
        for metric, limit in limits.items():
            measured = self.value(metric)
            if metric == "bound_ratio" and math.isnan(measured):
                continue  # no variant named: nothing to bound
            if not measured <= float(limit):
                fails.append(Failure(metric, measured, float(limit), **loc))
        return fails

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the metrics, worst elements, hazards, bound, bit matches."""
        d: dict[str, Any] = {k: _num(v) for k, v in self.metrics.to_dict().items()}
        d.update(
            shape=list(self.shape),
            out_dtype=self.out_dtype,
            worst_index=list(self.metrics.worst_index),
            worst=[w.to_dict() for w in self.worst],
            hazards=dict(self.hazards),
            bit_match={k: _num(v) for k, v in self.bit_match.items()},
            nearest_variant=self.nearest_variant,
            variant=self.variant,
            policy=self.policy,
            block_n=self.block_n,
            splits=self.splits,
            combine=self.combine,
            bound_cond_max=_num(self.bound_cond_max),
            bound_cond_median=_num(self.bound_cond_median),
            bound_ratio=_num(self.bound_ratio),
            bound_violations=self.bound_violations,
            bound_covered=self.bound_covered,
            emulated_hazards=dict(self.emulated_hazards),
            rule=None if self.rule is None else self.rule.to_dict(),
            standard=self.standard,
            standard_figures={k: _num(v) for k, v in self.standard_figures.items()},
            diagnosis=self.diagnosis,
        )
        return d


def _num(x: Any) -> Any:
    """JSON-safe number: inf/NaN as strings (JSON has neither)."""
    if isinstance(x, list | tuple):
        return [_num(v) for v in x]
    if isinstance(x, float | np.floating):
        f = float(x)
        return f if math.isfinite(f) else str(f)
    return x


def _key(arrs: Sequence[Any], scale: Any) -> str:
    h = hashlib.sha256(repr(scale).encode())
    hash_arrays(h, arrs, dtype_name=True)
    return h.hexdigest()


def reference_for(
    q: Any,
    k: Any,
    v: Any,
    scale: Any = None,
    *,
    mask: Any = None,
    digest: str | None = None,
    auto_ulp: float = AUTO_ULP_FP32,
) -> tuple[np.ndarray, np.ndarray]:
    """The certified reference ``(out, lse)`` (float64), cached in-process by input digest
    (``digest``: that of ``q, k, v, mask, scale``, when the caller has it already);
    ``auto_ulp``: its certification in FP32 ULPs (``reference.AUTO_ULP_FP64`` for FP64
    outputs)."""
    from amla_numerics.reference import attention

    key = digest if digest is not None else _key((q, k, v, mask), scale)
    if auto_ulp != AUTO_ULP_FP32:
        key = f"{key}:auto_ulp={auto_ulp!r}"
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    out, lse = attention(
        q, k, v, scale, mask=mask, method="auto", return_lse=True, auto_ulp=auto_ulp
    )
    _CACHE[key] = (out, lse)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out, lse


def _float_array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind != "f" and not (a.dtype.kind == "V" and a.dtype.itemsize <= 8):
        try:
            import ml_dtypes

            ml_dtypes.finfo(a.dtype)
        except (TypeError, ValueError):
            raise TypeError(
                f"argument {name!r} must be a float array (float64/32/16, bfloat16, FP8), "
                f"got dtype {a.dtype}"
            ) from None
    return a


def _check_shapes(out: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
    for name, a in (("q", q), ("k", k), ("v", v), ("out", out)):
        if a.ndim < 2:
            raise ValueError(f"array {name!r} must have at least 2 dimensions, got {a.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"shapes do not fit: q {q.shape} and k {k.shape} differ in Dk")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"shapes do not fit: k {k.shape} and v {v.shape} differ in N")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(
            f"shapes do not fit: leading dims of q {q.shape}, k {k.shape}, v {v.shape} "
            "do not broadcast"
        ) from None
    want = (*batch, q.shape[-2], v.shape[-1])
    if tuple(out.shape) != want:
        raise ValueError(
            f"shapes do not fit: out {out.shape} should be {want} for q {q.shape}, "
            f"k {k.shape}, v {v.shape}"
        )


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"u{a.dtype.itemsize}")


def _cast_like(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` rounded (rne) to ``dtype`` (exact when ``dtype`` is at least as wide)."""
    if x.dtype == dtype:
        return x
    from amla_numerics.rounding import round_to

    if dtype == np.float64:
        return x.astype(np.float64)
    for name in ("fp32", "fp16", "bf16", "e4m3", "e5m2"):
        from amla_numerics.formats import get_format

        fmt = get_format(name)
        if fmt.dtype == dtype:
            return np.asarray(round_to(x, fmt)).astype(dtype)
    return x.astype(dtype)


def _same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    nan = np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
    return (_bits(a) == _bits(b)) | nan


def compare(
    out: Any,
    q: Any,
    k: Any,
    v: Any,
    *,
    scale: Any = None,
    mask: Any = None,
    lse: Any = None,
    variant: str | None = None,
    policy: Any = None,
    block_n: int = 512,
    bit_match: bool | Sequence[str] = True,
    n_worst: int = 5,
    splits: int | None = None,
    combine: str = "cann",
    judge: bool = True,
    max_factor: float = MAX_FACTOR,
    rms_factor: float = RMS_FACTOR,
    standard: str = "schedule",
    baseline: Any = None,
) -> Comparison:
    """Measure a kernel's ``out`` against the certified reference of ``q, k, v``.

    Parameters
    ----------
    out : array_like, (..., M, Dv)
        The kernel's output, any float dtype (NaN/inf allowed: they are measured failures).
    q, k, v : array_like
        (..., M, Dk), (..., N, Dk), (..., N, Dv): the inputs the kernel read, exactly.
    scale : float, optional
        The softmax scale, taken exactly (default the exact ``1/sqrt(Dk)``).
    mask : array_like, optional
        Boolean (True attends) or additive float (``-inf`` drops), broadcastable to
        (..., M, N).
    lse : array_like, optional
        The kernel's log-sum-exp (..., M); measured as ``lse_err_max``.
    variant : str, optional
        The scheme the kernel implements: adds its elementwise a priori bound.
    policy : str, Policy or dict, optional
        The emulator's precision policy, for the rule, the bound and the bit match (default
        :func:`default_policy`: ``"ascend"`` for BF16 inputs).
    block_n : int
        The kernel's KV block length (for the bound and the bit match).
    bit_match : bool or sequence of str
        Emulate every variant (True), none (False) or these.
    n_worst : int
        How many worst elements to list.
    splits : int, optional
        The kernel's split-KV split count (flash-decoding): the emulated variants run with
        that many splits merged by ``combine`` and the bound is the split bound
        (:func:`~amla_numerics.analysis.bounds.split_bound`). None or 1: unsplit.
    combine : {"cann", "flashmla"}
        The kernel's combine (with ``splits``).
    judge : bool
        Apply the default verdict (:mod:`amla_numerics.testing.rule`): the error against
        the declared schedule's (``variant``, default ``"fa_fp32"``, under ``policy``,
        ``block_n``, ``splits``) emulated on the same inputs, the schedule's a priori
        bound as a ceiling, the lse when given, degenerate outputs (``passed``,
        ``reasons``, ``rule``).
    max_factor, rms_factor : float
        The rule's constants (:data:`~amla_numerics.testing.rule.MAX_FACTOR`,
        :data:`~amla_numerics.testing.rule.RMS_FACTOR`).
    standard : str
        The verdict's standard (:data:`~amla_numerics.testing.standards.STANDARDS`):
        ``"schedule"`` (the default rule), ``"flash-attn"``, ``"torch-sdpa"``, ``"cann-l0|l1|l2"``,
        ``"bound"``, ``"budget"`` (limits only, checked by the caller).
    baseline : array_like, optional
        The CANN standards' third-party output (default: the emulated schedule's, cast to
        ``out``'s dtype).

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        Shapes that do not fit (named), NaN/inf in the inputs, an unknown variant.
    TypeError
        A non-float array.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        req = _Request.checked(
            out,
            q,
            k,
            v,
            scale=scale,
            mask=mask,
            variant=variant,
            policy=policy,
            block_n=block_n,
            splits=splits,
            combine=combine,
            judge=judge,
            standard=standard,
        )
        return _compare(
            req,
            lse=lse,
            bit_match=bit_match,
            n_worst=n_worst,
            max_factor=max_factor,
            rms_factor=rms_factor,
            baseline=baseline,
        )


@dataclass(frozen=True)
class _Request:
    """One comparison's validated inputs and the kernel's declared schedule: what every
    emulation, bound and reference of :func:`compare` is keyed on."""

    out: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    scale: Any  # as given (the digest hashes its repr)
    mask: Any
    variant: str | None
    policy: Any  # as given, or :func:`default_policy`'s
    block_n: int
    splits: int | None
    combine: str
    judge: bool
    standard: str
    digest: str  # of ``q, k, v, mask, scale``

    @classmethod
    def checked(
        cls,
        out: Any,
        q: Any,
        k: Any,
        v: Any,
        *,
        scale: Any,
        mask: Any,
        variant: str | None,
        policy: Any,
        block_n: int,
        splits: int | None,
        combine: str,
        judge: bool,
        standard: str,
    ) -> _Request:
        """The arguments of :func:`compare` checked (ValueError/TypeError naming each)."""
        from amla_numerics.flash.splitkv import check_combine
        from amla_numerics.testing.standards import check_standard

        standard = check_standard(standard)
        o = _float_array(out, "out")
        qa, ka, va = (_float_array(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        _check_shapes(o, qa, ka, va)
        if variant is not None:
            variant = check_variant(variant)
        if isinstance(block_n, bool) or not isinstance(block_n, int | np.integer) or block_n < 1:
            raise ValueError(f"argument 'block_n' must be an integer >= 1, got {block_n!r}")
        if splits is not None and (
            isinstance(splits, bool) or not isinstance(splits, int | np.integer) or splits < 1
        ):
            raise ValueError(f"argument 'splits' must be an integer >= 1, got {splits!r}")
        combine = check_combine(combine)
        if policy is None:
            policy = default_policy(qa, ka, va)
        return cls(
            out=o,
            q=qa,
            k=ka,
            v=va,
            scale=scale,
            mask=mask,
            variant=variant,
            policy=policy,
            block_n=int(block_n),
            splits=None if splits is None else int(splits),
            combine=combine,
            judge=judge,
            standard=standard,
            digest=_key((qa, ka, va, mask), scale),
        )

    @property
    def sc(self) -> float | None:
        """The scale as a float (None: the default ``1/sqrt(Dk)``)."""
        return None if self.scale is None else float(self.scale)

    @property
    def n_splits(self) -> int:
        return 1 if self.splits is None else self.splits

    @property
    def schedule(self) -> str | None:
        """The schedule emulated and bounded: the variant, or the default when judged."""
        if self.variant is not None:
            return self.variant
        return DEFAULT_SCHEDULE if self.judge else None


@dataclass(frozen=True)
class _Emulated:
    """The declared schedule emulated on the inputs: its output, lse, hazard counts, and
    the elements its arithmetic's garbage reached."""

    out: np.ndarray
    lse: np.ndarray
    hazards: dict[str, int]
    garbage: np.ndarray


@dataclass(frozen=True)
class _Exact:
    """The certified reference of a request: ``out`` and ``lse`` (float64), ``mag`` (the
    condition-aware scale ``sum_k p_ik |v_kj|``) and its certification ``auto_ulp`` (FP32
    ULPs)."""

    out: np.ndarray
    lse: np.ndarray
    mag: np.ndarray
    auto_ulp: float


def _exact(req: _Request) -> _Exact:
    """The request's reference (cached in-process). FP64 policies are judged against a
    reference certified to one FP64 ULP (plus that certificate), the others against 1e-3
    FP32 ULP."""
    auto_ulp = reference_ulp(req.policy)
    ref, lse_ref = reference_for(
        req.q, req.k, req.v, req.scale, mask=req.mask, digest=req.digest, auto_ulp=auto_ulp
    )
    mag = _cached(
        req.digest, ("mag",), lambda: magnitude_scale(req.q, req.k, req.v, req.sc, mask=req.mask)
    )
    return _Exact(ref, lse_ref, mag, auto_ulp)


@dataclass(frozen=True)
class _BoundCheck:
    """The schedule's a priori bound (the reference's certificate added where it is
    FP64-certified) and the measured error against it."""

    bound: np.ndarray | None = None
    cond_max: float = math.nan
    cond_median: float = math.nan
    ratio: float = math.nan
    violations: int = 0
    covered: int = 0


def _compare(
    req: _Request,
    *,
    lse: Any,
    bit_match: bool | Sequence[str],
    n_worst: int,
    max_factor: float,
    rms_factor: float,
    baseline: Any,
) -> Comparison:
    """:func:`compare` on checked arguments: the reference, the metrics, the bit match, the
    declared schedule emulated and bounded, the verdict, the worst elements."""
    exact = _exact(req)
    ref = exact.out
    lse_raw = None if lse is None else _checked_lse(lse, exact.lse)
    lse64 = None if lse_raw is None else lse_raw.astype(np.float64)
    metrics = error_metrics(
        req.out, ref, mag=exact.mag, lse=lse64, lse_ref=None if lse64 is None else exact.lse
    )
    policy_name = req.policy if isinstance(req.policy, str) else req.policy.name
    matches, nearest = _bit_match(req, _bit_match_names(bit_match), ref)
    emulated = None if req.schedule is None else _emulate(req, req.schedule)
    # outside every bound: the elements the integer add's garbage reached (not a dead
    # split's, not the clamp's, not an FP32 overflow: those are judged)
    garbage = np.zeros(req.out.shape, dtype=bool)
    if emulated is not None:
        garbage |= np.broadcast_to(emulated.garbage, req.out.shape)
    covered = np.isfinite(ref) & ~garbage
    bc = _bound_check(req, exact, covered)
    rule = None
    if req.judge and req.schedule is not None and emulated is not None:
        rule = schedule_rule(
            req.out,
            ref,
            exact.mag,
            emulated.out,
            schedule=req.schedule,
            lse=lse_raw,
            lse_ref=exact.lse,
            sched_lse=emulated.lse,
            bound=bc.bound,
            covered=covered,
            max_factor=max_factor,
            rms_factor=rms_factor,
        )
    figures = _standard_figures(req, ref, emulated, baseline)
    diagnosis = _diagnosis(req, rule)
    return Comparison(
        metrics=metrics,
        shape=tuple(int(s) for s in req.out.shape),
        out_dtype=req.out.dtype.name,
        worst=_worst_elements(req.out, exact, bc.bound, n_worst),
        hazards=_input_hazards(req.v, ref, metrics),
        bit_match=matches,
        nearest_variant=nearest,
        variant=req.variant,
        policy=policy_name,
        block_n=req.block_n,
        splits=req.splits,
        combine=req.combine,
        bound_cond_max=bc.cond_max,
        bound_cond_median=bc.cond_median,
        bound_ratio=bc.ratio,
        bound_violations=bc.violations,
        bound_covered=bc.covered,
        emulated_hazards={} if emulated is None else dict(emulated.hazards),
        rule=rule,
        standard=req.standard,
        standard_figures=figures,
        diagnosis=diagnosis,
        ref=ref,
        lse_ref=exact.lse,
    )


def _checked_lse(lse: Any, lse_ref: np.ndarray) -> np.ndarray:
    """The kernel's lse as given (a float array of the reference lse's shape)."""
    raw = _float_array(lse, "lse")
    if raw.shape != lse_ref.shape:
        raise ValueError(f"shapes do not fit: lse {raw.shape} should be {lse_ref.shape}")
    return raw


def _bit_match_names(bit_match: bool | Sequence[str]) -> list[str]:
    """The variants to emulate for the bit match: every one (True), none, or these."""
    if bit_match is True:
        return list(VARIANTS)
    if bit_match:
        return [check_variant(n, "bit_match") for n in bit_match]
    return []


def _bit_match(
    req: _Request, names: Sequence[str], ref: np.ndarray
) -> tuple[dict[str, float], str | None]:
    """Each variant's share of output elements equal bit for bit to its emulated output (cast
    to ``out``'s dtype), and the nearest variant (None below :data:`NEAREST_MIN_SHARE`)."""
    o = req.out
    matches: dict[str, float] = {}
    dist: dict[str, float] = {}
    o64 = o.astype(np.float64)
    for name in names:
        emu = _emulate(req, name).out
        cast = _cast_like(emu, o.dtype)
        matches[name] = float(np.mean(_same_bits(cast, o))) if o.size else 1.0
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.linalg.norm(np.nan_to_num(o64 - emu.astype(np.float64), nan=np.inf))
            nrm = np.linalg.norm(np.nan_to_num(ref, nan=0.0))
        dist[name] = float(d / nrm) if nrm else float(d)
    nearest = None
    if matches:
        best = max(matches, key=lambda n: (matches[n], -dist.get(n, math.inf)))
        nearest = best if matches[best] >= NEAREST_MIN_SHARE else None
    return matches, nearest


def _bound_check(req: _Request, exact: _Exact, covered: np.ndarray) -> _BoundCheck:
    """The schedule's elementwise a priori bound, checked on the ``covered`` elements."""
    if req.schedule is None:
        return _BoundCheck()
    bound = _cached_bound(req, req.schedule)
    if bound is None:
        return _BoundCheck()
    if exact.auto_ulp != AUTO_ULP_FP32:  # the reference's own certificate, beside the bound
        bound = bound + reference_error(exact.out, exact.auto_ulp)
    check = bound_check(req.out, exact.out, bound, mag=exact.mag, covered=covered)
    return _BoundCheck(
        bound=bound,
        cond_max=check.bound_cond_max,
        cond_median=check.bound_cond_median,
        ratio=check.ratio,
        violations=check.violations,
        covered=check.n_covered,
    )


def _standard_figures(
    req: _Request, ref: np.ndarray, emulated: _Emulated | None, baseline: Any
) -> dict[str, float]:
    """The figures of ``req.standard`` other than the default rule's (none when not
    judged)."""
    from amla_numerics.testing import standards as std

    o = req.out
    figures: dict[str, float] = {}
    if req.judge and req.standard in ("flash-attn", "torch-sdpa"):
        naive = _emulate(req, "naive").out
        if req.standard == "flash-attn":
            figures["flash_attn_ratio"] = std.flash_attn_ratio(o, ref, naive)
        else:
            low = _cast_like(np.asarray(naive), o.dtype)
            figures["torch_sdpa_ratio"] = std.torch_sdpa_ratio(o, ref, low)
    elif req.judge and req.standard in std.CANN_LEVELS and emulated is not None:
        if baseline is None:
            base = _cast_like(np.asarray(emulated.out), o.dtype)
        else:
            base = _float_array(baseline, "baseline")
            if base.shape != o.shape:
                raise ValueError(f"shapes do not fit: baseline {base.shape} should be {o.shape}")
        figures.update(std.cann_ratios(o, ref, base, req.standard))
    return figures


def _diagnosis(req: _Request, rule: RuleResult | None) -> str:
    """The likely cause of a failed, non-degenerate rule
    (:func:`~amla_numerics.testing.diagnose.diagnose`); ``""`` otherwise."""
    if rule is None or rule.passed or rule.degenerate:
        return ""
    from amla_numerics.testing.diagnose import diagnose

    lse_bad = not math.isnan(rule.lse_ratio) and not rule.lse_ratio <= 1
    out_bad = not (rule.max_ratio <= 1 and rule.rms_ratio <= 1)
    if not (math.isnan(rule.bound_ratio) or rule.bound_ratio <= 1):
        out_bad = True
    sc = 1.0 / math.sqrt(req.q.shape[-1]) if req.sc is None else req.sc
    return diagnose(
        req.out, req.q, req.k, req.v, sc, req.mask, lse_failed=lse_bad, out_failed=out_bad
    )


def _worst_elements(
    o: np.ndarray, exact: _Exact, bound: np.ndarray | None, n_worst: int
) -> tuple[WorstElement, ...]:
    """The ``n_worst`` worst elements: non-finite outputs where the reference is finite
    first, then by condition-aware error (the first of equal errors)."""
    ref, mag = exact.out, exact.mag
    o64 = o.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        cond = condition_aware(np.abs(o64 - ref), mag)
    cond = np.where(np.isfinite(ref) & ~np.isfinite(o64), np.inf, cond)
    cond = np.where(np.isnan(ref), -1.0, cond)
    flat = cond.reshape(-1)
    garbage_out = (np.isfinite(ref) & ~np.isfinite(o64)).reshape(-1)
    kk = min(int(n_worst), flat.size)
    if kk <= 0:
        return ()
    top = np.flatnonzero(garbage_out)[:kk]
    if top.size < kk:
        by_err = np.argpartition(-flat, kk - 1)[:kk]
        by_err = by_err[np.argsort(-flat[by_err], kind="stable")]
        top = np.concatenate([top, by_err[~np.isin(by_err, top)]])[:kk]
    worst = []
    for t in top:
        idx = tuple(int(i) for i in np.unravel_index(int(t), cond.shape))
        worst.append(
            WorstElement(
                idx,
                float(o64[idx]),
                float(ref[idx]),
                float(cond[idx]),
                float(mag[idx]),
                float(bound[idx]) if bound is not None else math.nan,
            )
        )
    return tuple(worst)


def _input_hazards(v: np.ndarray, ref: np.ndarray, metrics: ErrorMetrics) -> dict[str, int]:
    """What the inputs and the output show: non-finite outputs, zero V columns, fully
    masked rows."""
    va64 = np.asarray(v).astype(np.float64)
    return {
        "nonfinite_out": int(metrics.n_nonfinite),
        "zero_v_columns": int(np.count_nonzero(np.all(va64 == 0, axis=-2))),
        "masked_rows": int(np.count_nonzero(np.all(np.isnan(ref), axis=-1))),
    }


def default_policy(q: Any, k: Any, v: Any) -> Any:
    """The emulator policy of the default schedule for inputs of these dtypes.

    ``"ascend"`` (BF16 matrix-unit inputs, BF16 P, FP32 everything else) when every input
    is BF16 or FP8; with FP16 inputs the matrix unit and the P cast are FP16; with wider
    inputs the matrix unit reads FP32 (P still cast to BF16), so that the schedule does not
    charge the kernel for rounding inputs it never rounded.

    >>> import numpy as np
    >>> default_policy(np.zeros(1, np.float32), np.zeros(1), np.zeros(1)).qk.in_format
    'fp32'
    """
    from amla_numerics.flash.policy import MatmulPolicy, Policy

    names = {np.asarray(a).dtype.name for a in (q, k, v)}
    if all(n == "bfloat16" or n.startswith("float8") for n in names):
        return "ascend"
    if all(n == "float16" or n.startswith("float8") for n in names):
        mm = MatmulPolicy(in_format="fp16")
        return Policy(name="ascend-fp16", qk=mm, pv=mm, p_cast="fp16")
    mm = MatmulPolicy(in_format="fp32")
    return Policy(name="ascend-fp32in", qk=mm, pv=mm)


def _cached(digest: str, what: tuple, make: Any) -> Any:
    """``make()`` cached in-process under the input digest and ``what``."""
    key = hashlib.sha256(repr((digest, what)).encode()).hexdigest()
    hit = _EMU_CACHE.get(key)
    if hit is not None:
        _EMU_CACHE.move_to_end(key)
        return hit
    value = make()
    _EMU_CACHE[key] = value
    while len(_EMU_CACHE) > 64:
        _EMU_CACHE.popitem(last=False)
    return value


def _what(name: str, req: _Request) -> tuple:
    from amla_numerics.flash.policy import get_policy

    policy = get_policy(req.policy).to_json()
    return (name, req.sc, req.block_n, policy, req.n_splits, req.combine)


def _emulate(req: _Request, name: str) -> _Emulated:
    """The emulated ``name`` on the request's inputs under its schedule (cached
    in-process)."""

    def run() -> _Emulated:
        from amla_numerics import flash

        res = flash.attention(
            req.q,
            req.k,
            req.v,
            name,
            scale=req.sc,
            block_n=req.block_n,
            policy=req.policy,
            mask=req.mask,
            splits=req.n_splits,
            combine=req.combine,
        )
        haz = {str(kk): int(vv) for kk, vv in res.hazards.items() if kk != "ok" and vv}
        return _Emulated(np.asarray(res.out), np.asarray(res.lse), haz, res.garbage_mask())

    return _cached(req.digest, _what("emulate:" + name, req), run)


def _cached_bound(req: _Request, name: str) -> np.ndarray:
    return _cached(
        req.digest,
        _what("bound:" + name, req),
        lambda: _elementwise_bound(
            name,
            req.q,
            req.k,
            req.v,
            req.sc,
            req.mask,
            req.block_n,
            req.policy,
            req.n_splits,
            req.combine,
        ),
    )


def _elementwise_bound(
    variant: str,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float | None,
    mask: Any,
    block_n: int,
    policy: Any,
    splits: int = 1,
    combine: str = "cann",
) -> np.ndarray:
    """The deterministic elementwise bound of ``variant`` (mask included); for a split-KV
    kernel (``splits > 1``) the split bound."""
    from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound, split_bound

    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if splits > 1:
        sb = split_bound(
            variant,
            q,
            k,
            v,
            sc,
            splits=splits,
            block_n=block_n,
            policy=policy,
            combine=combine,
            mask=mask,
        )
        return np.asarray(sb, dtype=np.float64)
    b = a_priori_bound(
        variant, head_dim=int(q.shape[-1]), kv_len=int(k.shape[-2]), block_n=block_n, policy=policy
    )
    det = elementwise_bound(b, q, k, v, sc, kind="deterministic", mask=mask)
    return np.asarray(det, dtype=np.float64)
