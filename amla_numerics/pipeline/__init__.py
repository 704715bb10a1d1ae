"""A tiled Ascend 910 (and H800) pipeline model of MLA decode attention.

Hardware descriptions as data (:mod:`.hardware`), the attention shape (:mod:`.shape`),
the schedule with its capacity check (:mod:`.schedule`), each rescale variant as data
movement (:mod:`.rescale`), the plan computed once with every per-block cost formula
(:mod:`.plan`; the kernels' split-KV choice: :mod:`.split_rules`), the analytic
roofline (:mod:`.analytic`), the operation graph
(:mod:`.graph`) and its discrete-event simulator (:mod:`.des`), the front door
:func:`evaluate` / :func:`run` (:mod:`.model`), published anchors (:mod:`.calibrate`),
traces and plots (:mod:`.trace`); the CLI is :mod:`amla_numerics.cli.pipeline`.

Examples
--------
>>> from amla_numerics.pipeline import evaluate
>>> evaluate("ascend910c", "amla", batch=8, kv_len=2048).bound
'AIC.Cube'
"""

from amla_numerics.pipeline.evaluation import evaluate
from amla_numerics.pipeline.hardware import HARDWARE_NAMES, Hardware, load_hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.plan import Plan, make_plan
from amla_numerics.pipeline.schedule import Schedule, check_capacity, default_schedule
from amla_numerics.pipeline.shape import AttentionShape

__all__ = [
    "HARDWARE_NAMES",
    "AttentionShape",
    "Hardware",
    "PipelineResult",
    "Plan",
    "Schedule",
    "check_capacity",
    "default_schedule",
    "evaluate",
    "load_hardware",
    "make_plan",
    "run",
]
