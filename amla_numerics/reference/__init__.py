"""Arbitrary-precision softmax-attention references: the mpmath truth and a certified fast oracle.

Modules: :mod:`.exactdot` (exact dot products as integer-limb GEMMs), :mod:`.mp` (the mpmath
truth: rows, softmax, log-sum-exp, the online-softmax recurrence), :mod:`.fast` (the
vectorised oracle with rigorous per-element bounds), :mod:`.cache` (content-addressed disk
cache), :mod:`.dispatch` (:func:`attention`: method dispatch, mpmath fallback, jobs, cache).
See ``docs/reference.md``.
"""

from amla_numerics.reference.dispatch import AUTO_ULP_FP32, AUTO_ULP_FP64, attention
from amla_numerics.reference.exactdot import ExactDot, IntDot, exact_dot, exact_dot_any
from amla_numerics.reference.fast import FastResult, FastUnavailable, certified_attention
from amla_numerics.reference.mp import (
    OnlineTrace,
    attention_row,
    mp_logsumexp,
    mp_softmax,
    online_softmax,
)

__all__ = [
    "AUTO_ULP_FP32",
    "AUTO_ULP_FP64",
    "ExactDot",
    "FastResult",
    "FastUnavailable",
    "IntDot",
    "OnlineTrace",
    "attention",
    "attention_row",
    "certified_attention",
    "exact_dot",
    "exact_dot_any",
    "mp_logsumexp",
    "mp_softmax",
    "online_softmax",
]
