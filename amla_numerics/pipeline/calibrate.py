"""Published anchors, the fit of each calibration constant on exactly one of them, and the
prediction checks (published figures never used for fitting).

An :class:`Anchor` is a published figure with the configuration it is compared to.
Its ``role`` says whether a calibration constant is *fitted* on it (the figure then
matches by construction, and proves nothing) or whether it is a *prediction* check
(every constant already fixed elsewhere). :func:`fit_constant` reproduces each shipped
constant from its anchor by bisection, so a reader can see the value was fitted, not tuned.

==================  ===========  ================================  ======================
anchor              hardware     role                              published
==================  ===========  ================================  ======================
amla_614            ascend910c   fits ``mmad_overhead_cycles``     614 TFLOPS (86.8 %)
flashmla_660        h800_sxm5    fits ``block_overhead_cycles``    660 TFLOPS
flashmla_3000       h800_sxm5    fits ``hbm_efficiency``           3000 GB/s
h20_sq3             h20          prediction                        129 TFLOPS
h20_sq8             h20          prediction                        120 TFLOPS
b2_fa_1k            ascend910b2  prediction                        9.18 TFLOPS
b2_fa_2k            ascend910b2  prediction                        30.33 TFLOPS
b2_fa_4k            ascend910b2  fits :data:`HOST_CALL_US`          72.61 TFLOPS
b2_fa_8k            ascend910b2  prediction                        97.30 TFLOPS
b2_fa_16k           ascend910b2  prediction                        122.88 TFLOPS
b2_fa_32k           ascend910b2  prediction                        150.78 TFLOPS
==================  ===========  ================================  ======================

The 910B2 rows are host-timed framework calls (``timing="host"``): torch_npu's FlashAttention
timed per call on the host, which adds the framework's per-call cost (operator dispatch,
the host-side tiling and workspace query of the aclnn two-phase call, task submission) to
the kernel that :func:`~amla_numerics.pipeline.model.run` models. That cost,
:data:`HOST_CALL_US`, is fitted on ``b2_fa_4k`` (:func:`fit_host_call`); every other row is a
prediction. The kernel-timed anchors (AMLA, FlashMLA, the H20 runs) never carry it.

Examples
--------
>>> a = ANCHORS["flashmla_3000"]
>>> a.metric, a.target, a.role
('hbm_gbps', 3000.0, 'fit hbm_efficiency')
>>> abs(anchor_value(a) / a.target - 1) < a.tolerance
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from amla_numerics.pipeline.hardware import Hardware, load_hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.shape import AttentionShape

__all__ = [
    "ANCHORS",
    "HOST_CALL_RANGE",
    "HOST_CALL_US",
    "Anchor",
    "anchor_result",
    "anchor_value",
    "fit_constant",
    "fit_host_call",
    "host_time_us",
]

#: Per-call host cost of a torch_npu FlashAttention call on the 910B2 (us): dispatch,
#: host tiling and workspace query (aclnn's two-phase call), task submission. Fitted on the
#: ``b2_fa_4k`` row (118.302 us published, :func:`fit_host_call`); no public figure gives it
#: directly. Source of the fit figure: hw-native-sys/pto-isa
#: kernels/manual/common/flash_atten/README.md, "910B2 Multi-Core Comparison".
HOST_CALL_US: float = 38.6
#: Its range: the same README's torch_npu time minus the PTO kernel's (launched without the
#: framework, timed by the same host benchmark) at S = 1024, 2048, 4096: 37.5, 38.3, 29.4 us,
#: and the fit itself.
HOST_CALL_RANGE: tuple[float, float] = (29.4, 38.6)


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A published figure and the configuration the model reproduces it with.

    Attributes
    ----------
    name, hardware, variant : str
        Anchor name, hardware file, variant.
    workload : Mapping[str, int]
        Keyword arguments of :class:`~amla_numerics.pipeline.shape.AttentionShape`.
    schedule : Mapping[str, int]
        Overrides of the default schedule (a head dim the default K split does not divide).
    metric : str
        ``"tflops"`` or ``"hbm_gbps"``.
    target, tolerance : float
        The published figure and the accepted relative deviation (fits: the bisection's
        resolution; predictions: 15 %, beyond which a miss is a documented finding).
    role : str
        ``"fit <field>"`` or ``"prediction"``.
    source : str
        Where the figure comes from.
    timing : str
        ``"kernel"`` (the device kernel's time, what the model reports) or ``"host"`` (a
        framework call timed on the host: the kernel plus :data:`HOST_CALL_US`).
    """

    name: str
    hardware: str
    variant: str
    workload: Mapping[str, int]
    metric: str
    target: float
    tolerance: float
    role: str
    source: str
    schedule: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    timing: str = "kernel"


def _anchor(
    name: str,
    hardware: str,
    variant: str,
    metric: str,
    target: float,
    tol: float,
    role: str,
    source: str,
    **workload: int,
) -> Anchor:
    return Anchor(
        name, hardware, variant, MappingProxyType(workload), metric, target, tol, role, source
    )


#: The published anchors, by name.
ANCHORS: Mapping[str, Anchor] = MappingProxyType(
    {
        a.name: a
        for a in (
            _anchor(
                "amla_614",
                "ascend910c",
                "amla",
                "tflops",
                614.0,
                0.05,
                "fit mmad_overhead_cycles",
                "AMLA abstract: up to 614 TFLOPS, 86.8 % of the theoretical peak on Ascend 910",
                batch=128,
                q_len=2,
                kv_len=16384,
            ),
            _anchor(
                "flashmla_660",
                "h800_sxm5",
                "fa_fp32",
                "tflops",
                660.0,
                0.10,
                "fit block_overhead_cycles",
                "FlashMLA README (deepseek-ai/FlashMLA): 660 TFLOPS compute-bound on H800 SXM5",
                batch=128,
                q_len=2,
                kv_len=8192,
            ),
            _anchor(
                "flashmla_3000",
                "h800_sxm5",
                "fa_fp32",
                "hbm_gbps",
                3000.0,
                0.02,
                "fit hbm_efficiency",
                "FlashMLA README (deepseek-ai/FlashMLA): 3000 GB/s memory-bound on H800 SXM5",
                batch=128,
                q_len=1,
                kv_len=8192,
                heads=16,
            ),
            _anchor(
                "h20_sq3",
                "h20",
                "fa_fp32",
                "tflops",
                129.0,
                0.15,
                "prediction",
                "deepseek-ai/FlashMLA issue 30 (H20 user run): b 128, s_q 3, s_k 8192, h_q 64, "
                "causal: 3.407 ms, 129 TFLOPS, 370 GB/s",
                batch=128,
                q_len=3,
                kv_len=8192,
                heads=64,
            ),
            _anchor(
                "h20_sq8",
                "h20",
                "fa_fp32",
                "tflops",
                120.0,
                0.15,
                "prediction",
                "deepseek-ai/FlashMLA issue 30 (H20 user run): b 128, s_q 8, s_k 8192, h_q 64, "
                "causal: 9.711 ms, 120 TFLOPS, 139 GB/s",
                batch=128,
                q_len=8,
                kv_len=8192,
                heads=64,
            ),
            *(
                dataclasses.replace(
                    _anchor(
                        f"b2_fa_{seq // 1024}k",
                        "ascend910b2",
                        "fa_fp32",
                        "tflops",
                        published,
                        0.15,
                        "fit host_call_us" if seq == 4096 else "prediction",
                        "hw-native-sys/pto-isa kernels/manual/common/flash_atten/README.md, 910B2 "
                        f"table, torch_npu baseline: S0 = S1 = {seq}, one head of 128, "
                        f"{us} us, {published} TFLOPS",
                        batch=1,
                        q_len=seq,
                        kv_len=seq,
                        heads=1,
                        d_qk=128,
                        d_v=128,
                        shared_kv=False,
                    ),
                    schedule=MappingProxyType({"l1_k_qk": 128, "l0_k_qk": 128}),
                    timing="host",
                )
                for seq, us, published in (
                    (1024, 58.461, 9.18),
                    (2048, 70.801, 30.33),
                    (4096, 118.302, 72.61),
                    (8192, 353.147, 97.30),
                    (16384, 1118.462, 122.88),
                    (32768, 3646.173, 150.78),
                )
            ),
        )
    }
)


def anchor_result(anchor: Anchor, hw: Hardware | None = None) -> PipelineResult:
    """Simulate ``anchor``'s configuration (on ``hw``, default: its shipped hardware file)."""
    hw = hw or load_hardware(anchor.hardware)
    wl = AttentionShape(**anchor.workload)  # type: ignore[arg-type]
    res = run(hw, wl, default_schedule(hw, anchor.variant, **anchor.schedule))
    assert isinstance(res, PipelineResult)
    return res


def host_time_us(anchor: Anchor, res: PipelineResult, host_call_us: float = HOST_CALL_US) -> float:
    """The time ``anchor``'s figure was measured as: the kernel, plus the per-call host cost
    for a host-timed framework call."""
    return res.time_us + (host_call_us if anchor.timing == "host" else 0.0)


def anchor_value(
    anchor: Anchor, hw: Hardware | None = None, host_call_us: float = HOST_CALL_US
) -> float:
    """The modelled value of ``anchor.metric`` for ``anchor``'s configuration (as measured:
    a host-timed anchor's figure is computed from :func:`host_time_us`)."""
    res = anchor_result(anchor, hw)
    value = float(getattr(res, anchor.metric))
    if anchor.timing == "kernel":
        return value
    return value * res.time_us / host_time_us(anchor, res, host_call_us)  # a rate


def fit_host_call(anchor: Anchor, digits: int = 1) -> float:
    """The per-call host cost that makes ``anchor`` (host-timed) meet its figure: the
    published time minus the modelled kernel time (the figure is a rate of fixed work).

    Examples
    --------
    >>> fit_host_call(ANCHORS["b2_fa_4k"]) == HOST_CALL_US
    True
    """
    if anchor.timing != "host":
        raise ValueError(f"anchor {anchor.name!r} is kernel-timed: it has no host call cost")
    res = anchor_result(anchor)
    published_us = res.time_us * float(getattr(res, anchor.metric)) / anchor.target
    return round(published_us - res.time_us, digits)


def fit_constant(
    anchor: Anchor,
    field: str,
    lo: float = 0.0,
    hi: float = 4000.0,
    tol: float = 0.5,
    digits: int = 0,
) -> float:
    """Fit ``field`` in [lo, hi] so that the model meets ``anchor.target`` (bisection).

    The metric must be monotone in the field (either direction). If it misses the target
    over the whole interval, the end nearer to it is returned (an overhead cannot be
    negative: the fit is then the bound). The result is rounded to ``digits``.

    Examples
    --------
    >>> fit_constant(ANCHORS["flashmla_3000"], "hbm_efficiency", 0.5, 1.0, 0.0025, 3)
    0.901
    """
    base = load_hardware(anchor.hardware)

    def f(x: float) -> float:
        return anchor_value(anchor, base.replace(**{field: x})) - anchor.target

    f_lo, f_hi = f(lo), f(hi)
    if f_lo * f_hi > 0:
        return round(lo if abs(f_lo) <= abs(f_hi) else hi, digits)
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return round(0.5 * (lo + hi), digits)
