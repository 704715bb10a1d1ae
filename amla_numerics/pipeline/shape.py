"""What is computed: the attention shape (:class:`AttentionShape`), its FLOPs and compulsory bytes.

The shape fixes the FLOPs and the bytes that must cross HBM; how the work is tiled and
ordered is the schedule's business (:mod:`~amla_numerics.pipeline.schedule`).

Examples
--------
>>> s = AttentionShape(batch=128, q_len=2, kv_len=16384)
>>> s.rows, s.flops
(256, 1168231104512.0)
"""

from __future__ import annotations

import dataclasses

__all__ = ["AttentionShape", "check_int"]


def check_int(owner: str, name: str, value: object, minimum: int = 1) -> None:
    """Raise TypeError/ValueError naming ``owner.name`` unless ``value`` is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    """MLA decode attention: ``batch`` requests of ``q_len`` tokens over ``kv_len`` cached ones.

    Parameters
    ----------
    batch, q_len, kv_len : int
        Requests, query tokens per request (s_q), cached tokens (s_k).
    heads : int
        Query heads sharing the latent KV cache (rows per request = heads x q_len).
    d_qk, d_v : int
        Score and value dims (576 = 512 latent + 64 rope; V = first 512 columns of K).
    kv_bytes : int
        Bytes per cached element (2 for BF16).

    Notes
    -----
    FLOPs = 2 * batch * q_len * heads * kv_len * (d_qk + d_v);
    HBM bytes = batch * kv_len * d_qk * kv_bytes (the cache, read once)
    + batch * rows * (d_qk + d_v) * 2 (Q in, output out, BF16).

    Examples
    --------
    >>> AttentionShape(batch=-1, q_len=1, kv_len=8)
    Traceback (most recent call last):
    ...
    ValueError: shape.batch must be >= 1, got -1
    """

    batch: int
    q_len: int
    kv_len: int
    heads: int = 128
    d_qk: int = 576
    d_v: int = 512
    kv_bytes: int = 2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_int("shape", f.name, getattr(self, f.name))
        if self.d_v > self.d_qk:
            raise ValueError(
                f"shape.d_v ({self.d_v}) must be <= d_qk ({self.d_qk}): "
                "V is the first d_v columns of the cached K rows"
            )

    @property
    def rows(self) -> int:
        """Query rows per request (heads x q_len)."""
        return self.heads * self.q_len

    @property
    def flops(self) -> float:
        """Useful FLOPs of the whole workload (QK^T and PV)."""
        return 2.0 * self.batch * self.rows * self.kv_len * (self.d_qk + self.d_v)

    @property
    def hbm_bytes(self) -> float:
        """Compulsory HBM bytes: the KV cache once, Q in and the output out (BF16)."""
        return float(
            self.batch
            * (self.kv_len * self.d_qk * self.kv_bytes + self.rows * (self.d_qk + self.d_v) * 2)
        )

    @property
    def intensity(self) -> float:
        """FLOP per compulsory HBM byte."""
        return self.flops / self.hbm_bytes
