"""Judge dump files: read a kernel's dump, compare it, check it against limits and budgets.

The library side of ``amla-numerics compare``: :func:`load_attention_dump` reads and
validates one dump (``q``, ``k``, ``v``, ``out``; optional ``scale``, ``mask``, ``lse``),
:func:`judge` compares it (:func:`~amla_numerics.testing.compare.compare`) and checks the
limits with the budgets' own check (:func:`~amla_numerics.analysis.budgets.check_limits`),
so a failure reads ``OVER: <kernel> <case> <metric> measured X > budget Y`` here as in
``check-budgets``. With no flags the default rule decides
(:mod:`amla_numerics.testing.rule`: the error against the declared schedule's, emulated on
the same inputs, the schedule's a priori bound as a ceiling, the lse whenever the dump has
one, degenerate outputs); limits and budgets add further checks. A non-finite output is a
measured failure (``n_nonfinite``).

Examples
--------
>>> import os, tempfile, numpy as np
>>> from amla_numerics.dumps import write_dump
>>> from amla_numerics.reference import attention
>>> rng = np.random.default_rng(0)
>>> q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 8), (16, 8), (16, 4)))
>>> out = attention(q, k, v).astype(np.float32)
>>> p = write_dump(os.path.join(tempfile.mkdtemp(), "case1.npz"), dict(q=q, k=k, v=v, out=out))
>>> verdict = judge(load_attention_dump(p), limits={"cond_err_max": 1.0}, bit_match=False)
>>> verdict.passed, verdict.case
(True, 'case1')
>>> p0 = write_dump(p.parent / "zero.npz", dict(q=q, k=k, v=v, out=0 * out))
>>> bad = judge(load_attention_dump(p0), bit_match=False)
>>> bad.passed, bad.reasons
(False, ('every output element is 0 while the reference is not',))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amla_numerics.analysis.budgets import Check, KernelBudget, check_limits
from amla_numerics.dumps import Dump, read_dump
from amla_numerics.testing.compare import LIMIT_METRICS, Comparison, compare
from amla_numerics.testing.rule import MAX_FACTOR, RMS_FACTOR

__all__ = ["AttentionDump", "Verdict", "judge", "load_attention_dump"]

_REQUIRED = ("q", "k", "v", "out")


@dataclass(frozen=True)
class AttentionDump:
    """A validated attention dump: the arrays exactly as stored, and the case's facts."""

    path: str
    case: str
    q: np.ndarray = field(repr=False)
    k: np.ndarray = field(repr=False)
    v: np.ndarray = field(repr=False)
    out: np.ndarray = field(repr=False)
    scale: float | None = None
    mask: np.ndarray | None = field(default=None, repr=False)
    lse: np.ndarray | None = field(default=None, repr=False)
    workload: str | None = None
    head_dim: int = 0
    kv_len: int = 0


def load_attention_dump(
    path: str | os.PathLike, *, dtypes: Mapping[str, str] | None = None
) -> AttentionDump:
    """Read a dump and check it holds a fitting attention problem.

    Raises
    ------
    ValueError
        One sentence naming the file: unreadable/corrupt/truncated, a missing array, a
        non-float array, shapes that do not fit (the arrays named), NaN/inf inputs.
    """
    dump: Dump = read_dump(path, dtypes=dtypes)
    dump.require(*_REQUIRED)
    a = dump.arrays
    p = dump.path
    for name in ("q", "k", "v", "out"):
        arr = a[name]
        if arr.dtype.kind not in "fV" and arr.dtype.name not in ("bfloat16",):
            raise ValueError(f"{p}: array {name!r} must be floating point, got {arr.dtype}")
        if arr.ndim < 2:
            raise ValueError(
                f"{p}: array {name!r} must have at least 2 dimensions, got {arr.shape}"
            )
    q, k, v, out = a["q"], a["k"], a["v"], a["out"]
    for name, arr in (("q", q), ("k", k), ("v", v)):
        if not np.isfinite(arr.astype(np.float64)).all():
            raise ValueError(f"{p}: input array {name!r} contains NaN or inf")
    from amla_numerics.testing.compare import _check_shapes

    try:
        _check_shapes(out, q, k, v)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None
    scale = None
    if "scale" in a:
        s = a["scale"]
        if s.size != 1 or s.dtype.kind not in "fiu":
            raise ValueError(f"{p}: array 'scale' must be one real number, got shape {s.shape}")
        scale = float(s.reshape(-1)[0].astype(np.float64))  # exact: any float up to float64
        if not math.isfinite(scale):
            raise ValueError(f"{p}: 'scale' must be finite, got {scale}")
    mask = a.get("mask")
    lse = a.get("lse")
    batch = out.shape[:-1]
    if lse is not None and tuple(lse.shape) != tuple(batch):
        raise ValueError(f"{p}: shapes do not fit: lse {lse.shape} should be {batch}")
    if mask is not None:
        full = (*batch, k.shape[-2])
        try:
            np.broadcast_shapes(mask.shape, full)
            ok = np.broadcast_shapes(mask.shape, full) == full
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{p}: shapes do not fit: mask {mask.shape} does not broadcast to {full}"
            )
    meta = dump.metadata
    return AttentionDump(
        path=p,
        case=meta.get("case", Path(p).stem),
        q=q,
        k=k,
        v=v,
        out=out,
        scale=scale,
        mask=mask,
        lse=lse,
        workload=meta.get("workload"),
        head_dim=int(meta["head_dim"]) if "head_dim" in meta else int(q.shape[-1]),
        kv_len=int(meta["kv_len"]) if "kv_len" in meta else int(k.shape[-2]),
    )


@dataclass(frozen=True)
class Verdict:
    """One dump judged: the comparison and every limit checked."""

    dump: AttentionDump
    comparison: Comparison
    checks: tuple[Check, ...]
    kernel: str
    budget_covered: bool | None = None

    @property
    def case(self) -> str:
        return self.dump.case

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def over(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def reasons(self) -> tuple[str, ...]:
        """The default rule's sentences for every broken rule (empty when it passed), and
        a budget that covers no entry of this case."""
        out = self.comparison.reasons
        if self.budget_covered is False:
            out = (*out, f"no entry of budget {self.kernel!r} covers case {self.case!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the dump, ``pass``, the failures, and :meth:`Comparison.to_dict`."""
        d = {"dump": self.dump.path, "case": self.case, "kernel": self.kernel, "pass": self.passed}
        d["failures"] = [c.describe() for c in self.over]
        d["reasons"] = list(self.reasons)
        d["budget_covered"] = self.budget_covered
        d.update(self.comparison.to_dict())
        return d


def judge(
    dump: AttentionDump,
    *,
    limits: Mapping[str, float] | None = None,
    budget: KernelBudget | None = None,
    kernel: str | None = None,
    variant: str | None = None,
    policy: Any = None,
    block_n: int = 512,
    bit_match: bool = True,
    splits: int | None = None,
    combine: str = "cann",
    rule: bool = True,
    max_factor: float = MAX_FACTOR,
    rms_factor: float = RMS_FACTOR,
    strict: bool = False,
    standard: str = "schedule",
    baseline: Any = None,
) -> Verdict:
    """Compare one dump and check it: the default rule, ``budget``'s limits, ``limits``.

    Always checked: ``n_nonfinite <= 0``. With ``rule`` (the default): the rule's figures
    (``schedule_max_ratio``, ``schedule_rms_ratio``, ``schedule_bound_ratio``,
    ``lse_ratio`` <= 1; ``degenerate`` <= 0) against the schedule ``variant`` (default
    ``"fa_fp32"``) under ``policy``, ``block_n``, ``splits``, ``combine``; another
    ``standard`` replaces the rule's figures by its own
    (:mod:`amla_numerics.testing.standards`; ``baseline``: the CANN standards' baseline
    output). A ``budget``
    with no limit for the case leaves ``budget_covered`` False (a reason says so); with
    ``strict`` that is a failure (metric ``budget_uncovered``).
    """
    c = compare(
        dump.out,
        dump.q,
        dump.k,
        dump.v,
        scale=dump.scale,
        mask=dump.mask,
        lse=dump.lse,
        variant=variant,
        policy=policy,
        block_n=block_n,
        bit_match=bit_match,
        splits=splits,
        combine=combine,
        judge=rule,
        max_factor=max_factor,
        rms_factor=rms_factor,
        standard=standard,
        baseline=baseline,
    )
    lim: dict[str, float] = {"n_nonfinite": 0.0}
    rule_values: dict[str, float] = {}
    for metric, (measured, limit) in c.checks().items():
        rule_values[metric] = measured
        lim[metric] = limit
    covered = None
    if budget is not None:
        sel = dict(
            name=dump.case, workload=dump.workload, head_dim=dump.head_dim, kv_len=dump.kv_len
        )
        lim.update(budget.limits_for(**sel))
        covered = budget.covers(**sel)
        if strict:
            lim["budget_uncovered"] = 0.0
    lim.update(limits or {})
    values: dict[str, float] = {m: c.value(m) for m in LIMIT_METRICS}
    values["n_nonfinite"] = float(c.metrics.n_nonfinite)
    values.update(rule_values)
    values["budget_uncovered"] = 0.0 if covered in (None, True) else 1.0
    name = kernel or (budget.name if budget is not None else "kernel")
    checks = check_limits(name, dump.case, values, lim)
    return Verdict(dump, c, tuple(checks), name, covered)
