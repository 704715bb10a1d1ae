"""Rigorous error bounds for every rescaling variant, per output element.

Each variant's error is bounded as a sum of per-key relative perturbations of the softmax
weights, one per rounding (or compensation) stage, chained over the KV blocks, plus a few
absolute terms (underflow, the ``dn`` clamp). The constants come from the
:class:`~amla_numerics.flash.policy.Policy` the bound is for (its formats, roundings,
accumulation models, clamp and bias): :func:`a_priori_bound` returns them as a
:class:`Bound`. :func:`elementwise_bound` evaluates the bound on inputs: it reads the exact
(float64) scores to find, per row, the KV blocks where the running max can change (the
only blocks where a rescale does anything but round, and the only ones where AMLA's
compensation mismatch or its ``dn`` clamp act), and returns an absolute bound per output
element. The bound is never NaN; it is ``+inf`` only on rows with no attended key (the
output is undefined there) or where a relative weight error exceeds ``e**709``.
:func:`split_bound` composes the per-split bounds with a split-KV combine's error.
The derivation is ``docs/bounds.md``.

The modules follow the emulator's stages (:mod:`amla_numerics.flash.emulator`), so each
term sits next to the stage it bounds:

================= ============================================================================
module            what it bounds (``docs/bounds.md`` section)
================= ============================================================================
``scores``        ``S = fl(QK^T scale)`` (and a bias): the score error ``e_i`` (2)
``exponentials``  ``P = exp(fl(S - m))``: the subtraction and the exp (2)
``pcast``         the P cast, a static P scale, FP8 saturation (3, 6)
``accumulation``  the matrix unit's sums (QK^T, P V), the row sum, the adds to O and l (3)
``rescale``       ``a_j`` and AMLA's integer add where the running max changes, the clamp (4, 5)
``division``      ``out = fl(O / l)`` and the absolute underflow terms (1, 6)
``split``         the split-KV combine: :func:`split_bound` (9)
``result``        :class:`Bound`, the constants (from :func:`a_priori_bound` in ``apriori``)
``inputs``        :class:`BoundInputs`, the input statistics (1)
``elementwise``   :func:`elementwise_bound`: the stages' terms summed per key (1, 7)
``arith``         ``gamma_n``, ``LAMBDA``, one cast's error (1, 7); ``arrays``: float64 sums
================= ============================================================================

Examples
--------
>>> import numpy as np
>>> b = a_priori_bound("fa_fp32", head_dim=128, kv_len=2048, block_n=512)
>>> b.blocks, b.u_work == 2.0**-24, b.u_cast == 2.0**-8
(4, True, True)
>>> b.coefficient("cast") == 2.0**-8
True
>>> rng = np.random.default_rng(0)
>>> q = rng.standard_normal((2, 128))
>>> k, v = rng.standard_normal((2048, 128)), rng.standard_normal((2048, 128))
>>> eb = elementwise_bound(b, q, k, v, 128**-0.5)
>>> eb.shape, bool(np.all(eb > 0))
((2, 128), True)
"""

from amla_numerics.analysis.bounds.apriori import a_priori_bound
from amla_numerics.analysis.bounds.arith import LAMBDA
from amla_numerics.analysis.bounds.elementwise import elementwise_bound
from amla_numerics.analysis.bounds.inputs import BoundInputs, bound_inputs, softmax_weights
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.analysis.bounds.scores import score_error
from amla_numerics.analysis.bounds.split import combine_terms, split_bound

__all__ = [
    "LAMBDA",
    "Bound",
    "BoundInputs",
    "a_priori_bound",
    "bound_inputs",
    "combine_terms",
    "elementwise_bound",
    "score_error",
    "softmax_weights",
    "split_bound",
]
