"""Hardware descriptions as data: TOML files whose every field carries its source.

A hardware file is a TOML document of sections (``chip``, ``memory``, ``rates``,
``calibration``) whose fields are inline tables ``{value = ..., source = "..."}``.
The source is a citation, the word ``assumption`` or the word ``calibration``
(fitted on a named anchor; see ``docs/pipeline.md``). A field no public document fixes
also carries ``range = [lo, hi]`` (its plausible interval, the source saying why): the
sensitivity analysis (:mod:`~amla_numerics.pipeline.sensitivity`) sweeps exactly these.
Peak FLOPS are derived (cores x FLOP/cycle x clock), never typed in; a published peak is kept as a
separately named reference.

Examples
--------
>>> hw = load_hardware("ascend910c")
>>> hw.name, hw.kind, int(hw["cores"])
('ascend910c', 'ascend', 48)
>>> for name, tflops in hw.peaks():
...     print(f"{name}: {tflops:.1f}")
48 AIC at 1.8 GHz = 707.8 TFLOPS: 707.8
public 752 TFLOPS: 752.0
>>> hw.source("clock_ghz")
'CANN platform config files (amla.md section 7)'
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "HARDWARE_NAMES",
    "REQUIRED_FIELDS",
    "Hardware",
    "hardware_from_dict",
    "load_hardware",
]

#: Shipped hardware files (``amla_numerics/pipeline/hardware/<name>.toml``).
HARDWARE_NAMES: tuple[str, ...] = (
    "ascend910c",
    "ascend910c_die",
    "ascend910b2",
    "ascend910b3",
    "ascend910b4",
    "h800_sxm5",
    "h100_sxm5",
    "h20",
    "ascend950",
    "b200",
)

_COMMON = (
    "chip.name",
    "chip.kind",
    "chip.cores",
    "chip.clock_ghz",
    "chip.public_peak_tflops",
    "memory.l2_bytes",
    "memory.hbm_gbps",
    "memory.hbm_efficiency",
    "rates.l2_read_bpc",
    "rates.exp_cost_per_repeat",
    "calibration.launch_us",
)

#: kind -> the dotted fields a hardware file of that kind must define.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "ascend": (
        *_COMMON,
        "chip.vector_per_core",
        "chip.cube_flop_per_cycle",
        "memory.l1_bytes",
        "memory.l0a_bytes",
        "memory.l0b_bytes",
        "memory.l0c_bytes",
        "memory.ub_bytes",
        "rates.l2_write_bpc",
        "rates.mte1_bpc",
        "rates.mte3_bpc",
        "rates.aiv_mte2_bpc",
        "rates.fix_bpc",
        "rates.vector_bytes_per_repeat",
        "rates.vector_repeats_per_cycle",
        "rates.l2_chip_gbps",
        "calibration.atomic_bpc",
        "calibration.flag_latency_cycles",
        "calibration.mmad_overhead_cycles",
        "calibration.atomic_rmw",
        "calibration.sync_us",
    ),
    "gpu": (
        *_COMMON,
        "chip.tensor_flop_per_cycle",
        "chip.sustained_clock_ghz",
        "chip.fp32_lanes",
        "chip.sfu_per_cycle",
        "memory.smem_bytes",
        "calibration.block_overhead_cycles",
    ),
}
_STRING_FIELDS = frozenset({"chip.name", "chip.kind"})
_FRACTION_FIELDS = frozenset({"memory.hbm_efficiency"})
_NONNEGATIVE_FIELDS = frozenset(
    {
        "calibration.atomic_rmw",
        "calibration.launch_us",
        "calibration.sync_us",
        "calibration.flag_latency_cycles",
        "calibration.mmad_overhead_cycles",
        "calibration.block_overhead_cycles",
    }
)


@dataclasses.dataclass(frozen=True)
class Hardware:
    """One chip: numeric fields by short name, each with its source.

    Parameters
    ----------
    name, kind : str
        Chip name and architecture kind (``"ascend"`` or ``"gpu"``).
    values : Mapping[str, float]
        Short field name (``"clock_ghz"``) -> value.
    sources : Mapping[str, str]
        Short field name -> source text (citation, ``assumption`` or ``calibration``).
    origin : str
        Where the description was read from.
    ranges : Mapping[str, tuple[float, float]]
        Short field name -> plausible (lo, hi) of the fields no public document fixes.

    Examples
    --------
    >>> hw = load_hardware("h800_sxm5")
    >>> round(hw.derived_peak_tflops(), 1)
    989.4
    """

    name: str
    kind: str
    values: Mapping[str, float]
    sources: Mapping[str, str]
    origin: str = "<dict>"
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )

    def __getitem__(self, key: str) -> float:
        try:
            return self.values[key]
        except KeyError:
            raise KeyError(f"hardware {self.name!r} has no field {key!r}") from None

    def source(self, key: str) -> str:
        """The source text of field ``key``."""
        return self.sources[key]

    def replace(self, **values: float) -> Hardware:
        """A copy with some numeric fields changed (sources marked ``override``).

        Examples
        --------
        >>> load_hardware("ascend910c").replace(clock_ghz=1.85)["clock_ghz"]
        1.85
        """
        new = dict(self.values)
        src = dict(self.sources)
        for key, value in values.items():
            if key not in new:
                raise ValueError(f"hardware {self.name!r} has no field {key!r} to override")
            new[key] = float(value)
            src[key] = "override"
        return dataclasses.replace(
            self, values=MappingProxyType(new), sources=MappingProxyType(src)
        )

    def pin(self, **values: float) -> Hardware:
        """A copy with some fields set and their ranges dropped: pinned, not searched.

        Examples
        --------
        >>> hw = load_hardware("ascend910c").pin(l2_chip_gbps=10000.0)
        >>> hw["l2_chip_gbps"], "l2_chip_gbps" in hw.ranges
        (10000.0, False)
        """
        new = self.replace(**values)
        ranges = {k: v for k, v in self.ranges.items() if k not in values}
        return dataclasses.replace(new, ranges=MappingProxyType(ranges))

    @property
    def flop_per_cycle(self) -> float:
        """Matrix-engine FLOP per cycle per core (Cube or tensor cores)."""
        key = "cube_flop_per_cycle" if self.kind == "ascend" else "tensor_flop_per_cycle"
        return self[key]

    def derived_peak_tflops(self, clock_ghz: float | None = None) -> float:
        """cores x FLOP/cycle x clock, in TFLOPS."""
        clock = self["clock_ghz"] if clock_ghz is None else clock_ghz
        return self["cores"] * self.flop_per_cycle * clock * 1e-3

    def peaks(self) -> list[tuple[str, float]]:
        """Every named peak (derived first), as (name, TFLOPS)."""
        unit = "AIC" if self.kind == "ascend" else "SM"
        cores, clock = int(self["cores"]), self["clock_ghz"]
        out = [
            (
                f"{cores} {unit} at {clock:g} GHz = {self.derived_peak_tflops():.1f} TFLOPS",
                self.derived_peak_tflops(),
            )
        ]
        if self.kind == "gpu":
            sus = self["sustained_clock_ghz"]
            out.append(
                (
                    f"{cores} {unit} at sustained {sus:g} GHz = "
                    f"{self.derived_peak_tflops(sus):.1f} TFLOPS",
                    self.derived_peak_tflops(sus),
                )
            )
        pub = self["public_peak_tflops"]
        out.append((f"public {pub:g} TFLOPS", pub))
        return out


def hardware_from_dict(doc: Mapping[str, object], origin: str = "<dict>") -> Hardware:
    """Validate a parsed hardware document and build a :class:`Hardware`.

    Raises
    ------
    ValueError
        Naming the missing or malformed field (``section.field``) and ``origin``.

    Examples
    --------
    >>> hardware_from_dict({"chip": {"kind": {"value": "ascend", "source": "x"}}})
    Traceback (most recent call last):
    ...
    ValueError: hardware file <dict>: field 'chip.name' is missing
    """

    ranges: dict[str, tuple[float, float]] = {}

    def field(dotted: str) -> tuple[object, str]:
        section, key = dotted.split(".")
        sec = doc.get(section)
        if not isinstance(sec, Mapping) or key not in sec:
            raise ValueError(f"hardware file {origin}: field {dotted!r} is missing")
        entry = sec[key]
        if not isinstance(entry, Mapping) or "value" not in entry or "source" not in entry:
            raise ValueError(
                f"hardware file {origin}: field {dotted!r} must be a table "
                '{value = ..., source = "..."}'
            )
        src = entry["source"]
        if not isinstance(src, str) or not src.strip():
            raise ValueError(f"hardware file {origin}: field {dotted!r} has an empty source")
        if "range" in entry:
            rng = entry["range"]
            ok = (
                isinstance(rng, list)
                and len(rng) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in rng)
                and rng[0] <= entry["value"] <= rng[1]
            )
            if not ok:
                raise ValueError(
                    f"hardware file {origin}: field {dotted!r} has a malformed range "
                    f"{rng!r} (expected [lo, hi] around the value)"
                )
            ranges[dotted.split(".")[1]] = (float(rng[0]), float(rng[1]))
        return entry["value"], src

    if not isinstance(doc, Mapping):
        raise TypeError(f"hardware file {origin}: expected a table, got {type(doc).__name__}")
    name, _ = field("chip.name")
    kind, _ = field("chip.kind")
    if kind not in REQUIRED_FIELDS:
        raise ValueError(
            f"hardware file {origin}: field 'chip.kind' must be one of "
            f"{', '.join(REQUIRED_FIELDS)}, got {kind!r}"
        )
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for dotted in REQUIRED_FIELDS[kind]:
        value, src = field(dotted)
        short = dotted.split(".")[1]
        sources[short] = src
        if dotted in _STRING_FIELDS:
            if not isinstance(value, str) or not value:
                raise ValueError(f"hardware file {origin}: field {dotted!r} must be a string")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"hardware file {origin}: field {dotted!r} must be a number, got {value!r}"
            )
        value = float(value)
        if dotted in _NONNEGATIVE_FIELDS:
            ok = value >= 0
        elif dotted in _FRACTION_FIELDS:
            ok = 0 < value <= 1
        else:
            ok = value > 0
        if not ok or value != value or value == float("inf"):
            raise ValueError(f"hardware file {origin}: field {dotted!r} is out of range: {value!r}")
        values[short] = value
    return Hardware(
        name=str(name),
        kind=str(kind),
        values=MappingProxyType(values),
        sources=MappingProxyType(sources),
        origin=origin,
        ranges=MappingProxyType(ranges),
    )


def load_hardware(name_or_path: str | os.PathLike[str]) -> Hardware:
    """Load a shipped hardware description by name, or any TOML file by path.

    Parameters
    ----------
    name_or_path : str or path-like
        One of :data:`HARDWARE_NAMES`, or a path to a ``.toml`` file.

    Raises
    ------
    ValueError
        Unknown name, malformed TOML, or a missing/malformed field (named).

    Examples
    --------
    >>> load_hardware("tpu_v9")
    Traceback (most recent call last):
    ...
    ValueError: unknown hardware 'tpu_v9' for argument 'hardware'; valid: ...
    """
    text: str
    if isinstance(name_or_path, str) and name_or_path in HARDWARE_NAMES:
        res = (
            importlib.resources.files("amla_numerics.pipeline")
            / "hardware"
            / f"{name_or_path}.toml"
        )
        text, origin = res.read_text(encoding="utf-8"), f"{name_or_path}.toml"
    else:
        path = Path(name_or_path)
        if path.suffix != ".toml" or not path.is_file():
            raise ValueError(
                f"unknown hardware {str(name_or_path)!r} for argument 'hardware'; "
                f"valid: {', '.join(HARDWARE_NAMES)}, or a path to a .toml file"
            )
        text, origin = path.read_text(encoding="utf-8"), str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"hardware file {origin}: malformed TOML: {exc}") from None
    return hardware_from_dict(doc, origin)
