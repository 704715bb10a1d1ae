"""``assert_attention_close``: a kernel's output as accurate as its schedule allows.

With no limits it applies the default rule (:mod:`amla_numerics.testing.rule`): the error
against the declared schedule's (``variant``, default ``"fa_fp32"``) emulated on the same
inputs, the a priori bound as a ceiling, the lse when given, degenerate outputs. Explicit
``max_*`` limits or a budget are checked as well. The message reads like numpy.testing's: a
headline, how many elements fail, the worst index with ``out`` vs ``ref``, the rule's
reasons and each metric against its limit.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> q, k, v = (rng.standard_normal(s) for s in ((2, 16), (32, 16), (32, 8)))
>>> from amla_numerics.reference import attention
>>> good = attention(q, k, v).astype(np.float32)
>>> assert_attention_close(good, q, k, v)
>>> assert_attention_close(good, q, k, v, max_cond_err=2.0)
>>> bad = good.copy(); bad[1, 3] += 1e-2
>>> assert_attention_close(bad, q, k, v, max_cond_err=2.0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
AssertionError: Attention output not within limits of the certified reference
Mismatched elements: 1 / 16 (6.25%) with cond_err > 2
Worst element: index (1, 3): out -0.0273... vs ref -0.0373... (cond_err 1.777e+05)
an element's error is ... x its limit (2 x the fa_fp32 schedule's worst + ...) at [1, 3]
RMS error 4.441e+04 is ... x its limit (1.5 x the fa_fp32 schedule's 6467 + 2 FP32 roundings)
an element exceeds the fa_fp32 a priori bound (... x bound + 1 output ULP + 2 FP32 roundings)
cond_err_max measured 177658 > limit 2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from amla_numerics.analysis.metrics import condition_aware
from amla_numerics.testing.compare import compare
from amla_numerics.testing.rule import MAX_FACTOR, RMS_FACTOR

__all__ = ["assert_attention_close", "limits_from"]


def limits_from(
    *,
    max_cond_err: float | None = None,
    max_bf16_ulp: float | None = None,
    max_row_rel: float | None = None,
    budget: Any = None,
) -> dict[str, float]:
    """One limits mapping from the ``max_*`` arguments and a budget.

    ``budget`` is a mapping ``{metric: limit}`` or a budgets object with a ``limits``
    mapping (:class:`amla_numerics.analysis.budgets.KernelBudget`); explicit ``max_*``
    arguments override it.
    """
    limits: dict[str, float] = {}
    if budget is not None:
        raw = getattr(budget, "limits", budget)
        if not isinstance(raw, Mapping):
            raise TypeError(f"argument 'budget' must be a mapping of limits, got {budget!r}")
        limits.update({str(k): float(v) for k, v in raw.items()})
    for name, value in (
        ("cond_err_max", max_cond_err),
        ("bf16_out_max_ulp", max_bf16_ulp),
        ("row_rel_max", max_row_rel),
    ):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise TypeError(f"limit for {name} must be a number, got {value!r}")
            limits[name] = float(value)
    return limits


def assert_attention_close(
    out: Any,
    q: Any,
    k: Any,
    v: Any,
    *,
    scale: Any = None,
    mask: Any = None,
    max_cond_err: float | None = None,
    max_bf16_ulp: float | None = None,
    max_row_rel: float | None = None,
    budget: Any = None,
    lse: Any = None,
    variant: str | None = None,
    policy: Any = None,
    block_n: int = 512,
    splits: int | None = None,
    rule: bool = True,
    max_factor: float = MAX_FACTOR,
    rms_factor: float = RMS_FACTOR,
) -> None:
    """Raise AssertionError unless ``out`` is within every limit of the exact attention.

    Parameters
    ----------
    out, q, k, v, scale, mask
        As for :func:`amla_numerics.testing.compare` (exact, any float dtype).
    max_cond_err : float, optional
        Limit on ``cond_err_max`` (units of ``2**-24 sum_k p_ik |v_kj|``).
    max_bf16_ulp : float, optional
        Limit on ``bf16_out_max_ulp`` (BF16 ULPs of the cast output from the correctly
        rounded BF16 reference).
    max_row_rel : float, optional
        Limit on ``row_rel_max`` (per-row relative 2-norm error).
    budget : mapping or KernelBudget, optional
        Further limits ``{metric: limit}`` (names in
        :data:`amla_numerics.testing.LIMIT_METRICS`).
    lse : array_like, optional
        The kernel's log-sum-exp (judged by the rule).
    variant, policy, block_n, splits
        The kernel's declared schedule (default ``"fa_fp32"``, ``"ascend"``, 512, unsplit).
    rule : bool
        Apply the default rule (on by default).
    max_factor, rms_factor : float
        The rule's constants.

    Raises
    ------
    AssertionError
        The rule broken, a limit exceeded, or a non-finite output where the reference is
        finite.
    """
    limits = limits_from(
        max_cond_err=max_cond_err, max_bf16_ulp=max_bf16_ulp, max_row_rel=max_row_rel, budget=budget
    )
    c = compare(
        out,
        q,
        k,
        v,
        scale=scale,
        mask=mask,
        lse=lse,
        variant=variant,
        policy=policy,
        block_n=block_n,
        splits=splits,
        bit_match=False,
        judge=rule,
        max_factor=max_factor,
        rms_factor=rms_factor,
    )
    fails = c.failures(limits)
    if not fails and c.passed:
        return
    o = np.asarray(out).astype(np.float64)
    n = int(o.size)
    lim = limits.get("cond_err_max")
    with np.errstate(divide="ignore", invalid="ignore"):
        from amla_numerics.analysis.metrics import magnitude_scale

        sc = None if scale is None else float(scale)
        mag = magnitude_scale(q, k, v, sc, mask=mask)
        cond = condition_aware(np.abs(o - c.ref), mag)
    bad = ~np.isfinite(o) & np.isfinite(c.ref)
    if lim is not None:
        bad |= cond > lim
        what = f"with cond_err > {lim:g}"
    else:
        what = "non-finite"
    nbad = int(np.count_nonzero(bad))
    lines = [
        "Attention output not within limits of the certified reference",
        f"Mismatched elements: {nbad} / {n} ({100.0 * nbad / max(n, 1):.3g}%) {what}",
    ]
    if c.worst:
        w = c.worst[0]
        lines.append(
            f"Worst element: index {w.index}: out {w.out!r} vs ref {w.ref!r} "
            f"(cond_err {w.cond_err:.4g})"
        )
    lines += list(c.reasons)
    if c.diagnosis:
        lines.append(f"likely cause: {c.diagnosis}")
    lines += [f.describe().split(" (worst at")[0] for f in fails]
    raise AssertionError("\n".join(lines))
