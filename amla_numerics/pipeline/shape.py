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


#: KV cache formats: ``bf16``, or FlashMLA's FP8 cache (per token: the first d_v values as
#: E4M3 with one FP32 scale per 128 values, the rest (RoPE) in BF16: 656 bytes for 576/512;
#: ``csrc/cuda_kernels/kv_cache_format.h`` of deepseek-ai/FlashMLA).
KV_CACHES: tuple[str, ...] = ("bf16", "fp8")


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    """A decode or prefill shape: ``batch`` requests of ``q_len`` tokens over ``kv_len`` keys.

    Parameters
    ----------
    batch, q_len, kv_len : int
        Requests, query tokens per request (s_q), keys (s_k).
    heads : int
        Query heads (divide by a tensor-parallel degree to model one device's share).
    kv_heads : int
        KV heads: 1 for MLA/MQA, ``heads`` for MHA, in between for GQA (must divide heads).
    d_qk, d_v : int
        Score and value dims (MLA: 576 = 512 latent + 64 rope; V = first 512 columns of K).
    shared_kv : bool
        V is the first ``d_v`` columns of the cached K rows (MLA); False: a separate V cache.
    kv_cache : str
        ``"bf16"`` or ``"fp8"`` (:data:`KV_CACHES`).
    causal : bool
        Mask keys after each query's position: a row tile stops at the last key its last
        query sees (blocks above the diagonal are skipped). FLOPs are still counted over all
        ``kv_len`` keys, as FlashMLA's benchmark counts them.

    Notes
    -----
    FLOPs = 2 * batch * q_len * heads * kv_len * (d_qk + d_v);
    HBM bytes = batch * kv_heads * kv_len * (cache bytes per token) (read once)
    + batch * heads * q_len * (d_qk + d_v) * 2 (Q in, output out, BF16).

    Examples
    --------
    >>> AttentionShape(batch=-1, q_len=1, kv_len=8)
    Traceback (most recent call last):
    ...
    ValueError: shape.batch must be >= 1, got -1
    >>> AttentionShape(1, 1, 8, kv_cache="fp8").cache_token_bytes   # 512 + 4 x 4 + 64 x 2
    656
    >>> AttentionShape(2, 1, 8, heads=32, kv_heads=8, d_qk=128, d_v=128, shared_kv=False).rows
    4
    """

    batch: int
    q_len: int
    kv_len: int
    heads: int = 128
    d_qk: int = 576
    d_v: int = 512
    kv_heads: int = 1
    shared_kv: bool = True
    kv_cache: str = "bf16"
    causal: bool = False

    def __post_init__(self) -> None:
        for name in ("batch", "q_len", "kv_len", "heads", "d_qk", "d_v", "kv_heads"):
            check_int("shape", name, getattr(self, name))
        for name in ("shared_kv", "causal"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"shape.{name} must be a bool, got {getattr(self, name)!r}")
        if self.kv_cache not in KV_CACHES:
            raise ValueError(
                f"shape.kv_cache must be one of {', '.join(KV_CACHES)}, got {self.kv_cache!r}"
            )
        if self.heads % self.kv_heads:
            raise ValueError(f"shape.kv_heads ({self.kv_heads}) must divide heads ({self.heads})")
        if self.shared_kv and self.d_v > self.d_qk:
            raise ValueError(
                f"shape.d_v ({self.d_v}) must be <= d_qk ({self.d_qk}): "
                "V is the first d_v columns of the cached K rows (shared_kv)"
            )
        if self.causal and self.q_len > self.kv_len:
            raise ValueError(
                f"shape.q_len ({self.q_len}) must be <= kv_len ({self.kv_len}) when causal"
            )

    @property
    def groups(self) -> int:
        """Independent (request, KV head) pairs."""
        return self.batch * self.kv_heads

    @property
    def rows(self) -> int:
        """Query rows sharing one KV head of one request (heads / kv_heads x q_len)."""
        return self.heads // self.kv_heads * self.q_len

    def _bytes(self, dims: int) -> int:
        if self.kv_cache == "bf16":
            return dims * 2
        return dims + -(-dims // 128) * 4  # E4M3 + one FP32 scale per 128 values

    @property
    def k_token_bytes(self) -> int:
        """Bytes of one cached K row (MLA FP8: quantised latent + BF16 rope)."""
        if self.shared_kv and self.kv_cache == "fp8":
            return self._bytes(self.d_v) + (self.d_qk - self.d_v) * 2
        return self._bytes(self.d_qk)

    @property
    def v_token_bytes(self) -> int:
        """Bytes of one V row as the P V product reads it."""
        return self._bytes(self.d_v)

    @property
    def cache_token_bytes(self) -> int:
        """HBM bytes per token per KV head (K, plus V unless it is a view of K)."""
        return self.k_token_bytes + (0 if self.shared_kv else self.v_token_bytes)

    @property
    def flops(self) -> float:
        """Useful FLOPs of the whole shape (QK^T and PV over all keys)."""
        return 2.0 * self.batch * self.heads * self.q_len * self.kv_len * (self.d_qk + self.d_v)

    @property
    def hbm_bytes(self) -> float:
        """Compulsory HBM bytes: the KV cache once, Q in and the output out (BF16)."""
        return float(
            self.groups
            * (self.kv_len * self.cache_token_bytes + self.rows * (self.d_qk + self.d_v) * 2)
        )

    @property
    def intensity(self) -> float:
        """FLOP per compulsory HBM byte."""
        return self.flops / self.hbm_bytes
