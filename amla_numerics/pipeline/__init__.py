"""A tiled Ascend 910 (and H800) pipeline model of MLA decode attention.

Hardware descriptions as data (:mod:`.hardware`), workload and schedule with capacity
checks (:mod:`.workload`), each rescale variant as data movement (:mod:`.rescale`), the
analytic roofline (:mod:`.analytic`), the discrete-event simulator (:mod:`.des`, built
by :mod:`.build`), the front door :func:`evaluate` / :func:`run` (:mod:`.model`),
published anchors (:mod:`.calibrate`), traces and plots (:mod:`.trace`), the CLI (:mod:`.cli`).

Examples
--------
>>> from amla_numerics.pipeline import evaluate
>>> evaluate("ascend910c", "amla", batch=8, kv_len=2048).bound
'AIC.Cube'
"""

from amla_numerics.pipeline.hardware import HARDWARE_NAMES, Hardware, load_hardware
from amla_numerics.pipeline.model import PipelineResult, evaluate, run
from amla_numerics.pipeline.workload import Schedule, Workload, check_capacity, default_schedule

__all__ = [
    "HARDWARE_NAMES",
    "Hardware",
    "PipelineResult",
    "Schedule",
    "Workload",
    "check_capacity",
    "default_schedule",
    "evaluate",
    "load_hardware",
    "run",
]
