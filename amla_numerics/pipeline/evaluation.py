"""The keyword front door of the pipeline model: one configuration, by name, with bounds.

Examples
--------
>>> r = evaluate("ascend910c", "amla", batch=48, q_len=2, kv_len=4096)
>>> r.bound, r.peak_name
('AIC.Cube', '48 AIC at 1.8 GHz = 707.8 TFLOPS')
"""

from __future__ import annotations

import os

from amla_numerics.pipeline.hardware import Hardware, load_hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.sensitivity import interval
from amla_numerics.pipeline.shape import AttentionShape

__all__ = ["evaluate"]


def evaluate(
    hardware: str | os.PathLike[str] | Hardware = "ascend910c",
    variant: str = "amla",
    *,
    batch: int = 128,
    q_len: int = 2,
    kv_len: int = 16384,
    heads: int = 128,
    kv_heads: int = 1,
    d_qk: int = 576,
    d_v: int = 512,
    shared_kv: bool = True,
    kv_cache: str = "bf16",
    causal: bool = False,
    block_n: int | None = None,
    splits: int | None = None,
    rescale_prob: float | None = None,
    schedule: str | None = None,
    bounds: bool = False,
) -> PipelineResult:
    """Modelled throughput of one attention kernel configuration for one variant.

    Parameters
    ----------
    hardware : str, path or Hardware
        A shipped hardware name (``ascend910c`` ...), a TOML path, or a loaded description.
    variant : str
        Any name in :data:`amla_numerics.variants.VARIANTS`, or a model-only design
        (:data:`~amla_numerics.pipeline.rescale.MODEL_DESIGNS`, e.g. ``fa_fp32_ub``).
    batch, q_len, kv_len, heads, kv_heads, d_qk, d_v, shared_kv, kv_cache, causal
        The shape (:class:`~amla_numerics.pipeline.shape.AttentionShape`; default: MLA
        decode, d_qk 576, d_v 512, one latent KV head, BF16 cache).
    block_n : int, optional
        KV block size (default: the kernel's, 512 on Ascend, 64 on a GPU).
    splits : int, optional
        Explicit split-KV count (default: the kernels' heuristic).
    rescale_prob : float, optional
        ``lazy`` only: the fraction of (block, row group) pairs that rescale, measured per
        group of :func:`~amla_numerics.pipeline.rescale.rows_per_decision` rows (None: the
        documented default :data:`~amla_numerics.pipeline.rescale.DEFAULT_LAZY_RESCALE_PROB`).
    schedule : str, optional
        ``"preload"`` (depth 2, as in the AMLA kernel) or ``"serial"``; None: the
        hardware's kernel (preload on Ascend, FlashMLA's serial order on a GPU).
    bounds : bool
        Also bound the time, TFLOPS and utilisation over the unsourced parameters' box
        (:func:`~amla_numerics.pipeline.sensitivity.interval`: the ends with the parameter
        values that reach them; the anchored constant re-fitted at every point).

    Returns
    -------
    PipelineResult

    Examples
    --------
    >>> a = evaluate(variant="amla", batch=32, kv_len=4096)
    >>> f = evaluate(variant="fa_fp32", batch=32, kv_len=4096)
    >>> a.tflops > f.tflops
    True
    """
    hw = hardware if isinstance(hardware, Hardware) else load_hardware(hardware)
    wl = AttentionShape(
        batch=batch,
        q_len=q_len,
        kv_len=kv_len,
        heads=heads,
        kv_heads=kv_heads,
        d_qk=d_qk,
        d_v=d_v,
        shared_kv=shared_kv,
        kv_cache=kv_cache,
        causal=causal,
    )
    over: dict[str, object] = {"rescale_prob": rescale_prob, "splits": splits}
    if schedule is not None:
        over["order"] = schedule
    if block_n is not None:
        over["kv_block"] = block_n
    sch = default_schedule(hw, variant, **over)
    res = run(hw, wl, sch)
    assert isinstance(res, PipelineResult)
    return interval(hw, wl, sch, nominal=res) if bounds else res
