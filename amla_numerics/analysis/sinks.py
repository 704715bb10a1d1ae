"""A workload family with attention sinks of a given strength.

Every row's scores are about ``N(0, 1)`` logits except for ``n_sinks`` sink keys at the start
of the sequence, whose logits sit ``delta`` nats higher: the pattern of trained LLMs, where
the first tokens soak up most of the attention (Xiao et al. 2024, "Efficient Streaming
Language Models with Attention Sinks"). With the sinks in the first KV block and the
forward order, every later probability is about ``exp(-delta)`` relative to the running
max: the regime where an FP8 ``P`` underflows.

Construction (float64, then one rne rounding of q, k, v to the input format, BF16 by
default; seeded by ``numpy.random.default_rng(seed)``): ``q``, ``k``, ``v`` standard normal,
``scale = 1/sqrt(d)``; feature 0 carries the sink: ``q[:, 0] = sqrt(d)`` (so it adds
``k[j, 0]`` nats to every row's score of key ``j``), ``k[:, 0] = 0`` for ordinary keys and
``k[j, 0] = delta`` for the sinks ``j < n_sinks``. An ordinary score is then
``N(0, (d - 1)/d)``, a sink's ``delta + N(0, (d - 1)/d)`` (before the input rounding, which
moves ``delta`` by at most its BF16 half-ulp: exact for the integers and halves up to 128).

Examples
--------
>>> w = sink_workload(8.0, head_dim=64, kv_len=1024, rows=2, seed=0)
>>> w.name, w.q.shape, w.k.shape, w.q.dtype.name
('sink8', (2, 64), (1024, 64), 'bfloat16')
>>> s = w.scale * (w.q.astype(float) @ w.k.astype(float).T)
>>> bool(s[:, :4].mean() - s[:, 4:].mean() > 6)
True
"""

from __future__ import annotations

import math

import numpy as np

from amla_numerics.analysis.workloads import Workload, gaussian_qkv
from amla_numerics.formats import BF16, Format, get_format
from amla_numerics.rounding import round_to

__all__ = ["DEFAULT_SINKS", "sink_workload"]

#: Sink tokens at the start of the sequence (StreamingLLM keeps 4).
DEFAULT_SINKS: int = 4


def sink_workload(
    delta: float,
    *,
    head_dim: int,
    kv_len: int,
    rows: int = 16,
    n_sinks: int = DEFAULT_SINKS,
    seed: int = 0,
    fmt: Format | str = BF16,
) -> Workload:
    """Inputs with ``n_sinks`` sink keys ``delta`` nats above ``N(0, 1)`` logits.

    Parameters
    ----------
    delta : float
        Sink strength in nats (finite, >= 0).
    head_dim, kv_len, rows : int
        ``d >= 2``, ``N >= n_sinks``, ``M >= 1``.
    n_sinks : int
        Sink keys at positions ``0 .. n_sinks - 1`` (>= 0).
    seed : int
        Seed of ``numpy.random.default_rng``.
    fmt : Format or str
        Input format (BF16 default).

    Returns
    -------
    Workload
        Named ``f"sink{delta:g}"``.

    Raises
    ------
    ValueError
        ``delta`` negative or not finite, sizes out of range.
    TypeError
        ``delta`` not a real number.
    """
    if isinstance(delta, bool) or not isinstance(delta, int | float | np.floating | np.integer):
        raise TypeError(f"argument 'delta' must be a real number, got {type(delta).__name__}")
    if not math.isfinite(float(delta)) or delta < 0:
        raise ValueError(f"argument 'delta' must be finite and >= 0, got {delta!r}")
    for arg, val, low in (("head_dim", head_dim, 2), ("kv_len", kv_len, 1), ("rows", rows, 1)):
        if not isinstance(val, int | np.integer) or val < low:
            raise ValueError(f"argument {arg!r} must be an integer >= {low}, got {val!r}")
    if not isinstance(n_sinks, int | np.integer) or not 0 <= n_sinks <= kv_len:
        raise ValueError(f"argument 'n_sinks' must be an integer in [0, kv_len], got {n_sinks!r}")
    fmt = get_format(fmt)
    _rng, q, k, v = gaussian_qkv(seed, rows=rows, kv_len=kv_len, head_dim=head_dim)
    d = int(head_dim)
    scale = 1.0 / math.sqrt(d)
    q[:, 0] = math.sqrt(d)
    k[:, 0] = 0.0
    k[:n_sinks, 0] = float(delta)
    name = f"sink{float(delta):g}"
    return Workload(name, round_to(q, fmt), round_to(k, fmt), round_to(v, fmt), scale, seed)
