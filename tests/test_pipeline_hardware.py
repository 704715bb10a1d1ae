"""Hardware files as data: every field sourced, peaks derived, malformed files named.

Oracles: the peak is recomputed with Fractions from the file's own fields; malformed
files are produced by deleting or corrupting each required field of a shipped file in turn.
"""

from __future__ import annotations

import re
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

from amla_numerics.cli import main
from amla_numerics.pipeline.hardware import (
    HARDWARE_NAMES,
    REQUIRED_FIELDS,
    hardware_from_dict,
    load_hardware,
)

HW_DIR = Path(__file__).resolve().parents[1] / "amla_numerics" / "pipeline" / "hardware"


@pytest.mark.parametrize("name", HARDWARE_NAMES)
def test_every_field_has_a_source(name: str) -> None:
    doc = tomllib.loads((HW_DIR / f"{name}.toml").read_text(encoding="utf-8"))
    for section, fields in doc.items():
        for key, entry in fields.items():
            assert {"value", "source"} <= set(entry) <= {"value", "source", "range"}, key
            assert entry["source"].strip(), f"{name}: {section}.{key} has no source"
    hw = load_hardware(name)
    for key in hw.values:
        src = hw.source(key)
        # a citation, or it says what it is
        assert (
            src.startswith(("assumption", "calibration"))
            or "(" in src
            or "whitepaper" in src
            or "spec" in src
            or "datasheet" in src
            or src.startswith("derived")
        ), f"{name}.{key}: {src}"


@pytest.mark.parametrize("name", HARDWARE_NAMES)
def test_peak_is_derived_never_typed(name: str) -> None:
    doc = tomllib.loads((HW_DIR / f"{name}.toml").read_text(encoding="utf-8"))
    assert not any("peak" in k and "public" not in k for sec in doc.values() for k in sec)
    hw = load_hardware(name)
    chip = doc["chip"]
    fpc = chip.get("cube_flop_per_cycle", chip.get("tensor_flop_per_cycle"))["value"]
    exact = (
        Fraction(chip["cores"]["value"])
        * Fraction(fpc)
        * Fraction(str(chip["clock_ghz"]["value"]))
        / 1000
    )
    name0, peak0 = hw.peaks()[0]
    assert peak0 == pytest.approx(float(exact), rel=1e-15)
    assert f"{float(exact):.1f} TFLOPS" in name0
    assert hw.peaks()[-1] == (
        f"public {chip['public_peak_tflops']['value']:g} TFLOPS",
        chip["public_peak_tflops"]["value"],
    )


def test_ascend910c_named_peaks_match_the_design_card() -> None:
    names = [n for n, _ in load_hardware("ascend910c").peaks()]
    assert names == ["48 AIC at 1.8 GHz = 707.8 TFLOPS", "public 752 TFLOPS"]
    die = load_hardware("ascend910c_die")
    assert die.derived_peak_tflops() * 2 == load_hardware("ascend910c").derived_peak_tflops()


def _without(text: str, dotted: str) -> str:
    section, key = dotted.split(".")
    out, current = [], None
    for line in text.splitlines():
        m = re.match(r"\[(\w+)\]", line)
        if m:
            current = m.group(1)
        if current == section and re.match(rf"{key}\s*=", line):
            continue
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("dotted", REQUIRED_FIELDS["ascend"])
def test_missing_field_is_named(tmp_path: Path, dotted: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(_without((HW_DIR / "ascend910c.toml").read_text(), dotted))
    with pytest.raises(ValueError, match=re.escape(f"field '{dotted}' is missing")):
        load_hardware(path)


@pytest.mark.parametrize(
    "dotted", [f for f in REQUIRED_FIELDS["gpu"] if f not in ("chip.name", "chip.kind")]
)
def test_bad_values_are_named(dotted: str) -> None:
    doc = tomllib.loads((HW_DIR / "h800_sxm5.toml").read_text(encoding="utf-8"))
    section, key = dotted.split(".")
    for bad in (-1.0, "fast", float("nan"), True):
        doc[section][key] = {"value": bad, "source": "x"}
        with pytest.raises(ValueError, match=re.escape(f"field '{dotted}'")):
            hardware_from_dict(doc, "t.toml")
    doc[section][key] = {"value": 1.0, "source": " "}
    with pytest.raises(ValueError, match=re.escape(f"field '{dotted}' has an empty source")):
        hardware_from_dict(doc, "t.toml")
    doc[section][key] = 1.0
    with pytest.raises(ValueError, match=re.escape(f"field '{dotted}' must be a table")):
        hardware_from_dict(doc, "t.toml")


def test_malformed_toml_and_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[chip\nname = 1")
    with pytest.raises(ValueError, match="malformed TOML"):
        load_hardware(path)
    text = (HW_DIR / "ascend910c.toml").read_text().replace('value = "ascend"', 'value = "tpu"')
    path.write_text(text)
    with pytest.raises(ValueError, match=r"field 'chip.kind' must be one of ascend, gpu"):
        load_hardware(path)


def test_replace_overrides_and_rejects_unknown() -> None:
    hw = load_hardware("ascend910c").replace(clock_ghz=1.85)
    assert hw.source("clock_ghz") == "override"
    assert hw.derived_peak_tflops() == pytest.approx(48 * 8192 * 1.85e-3)
    with pytest.raises(ValueError, match="no field 'warp_speed'"):
        hw.replace(warp_speed=9)


def test_cli_malformed_hardware_exits_2_naming_the_field(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(_without((HW_DIR / "ascend910c.toml").read_text(), "rates.fix_bpc"))
    assert main(["pipeline", "--hardware", str(path), "--batch", "2", "--kv-len", "512"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amla-numerics: error:") and "'rates.fix_bpc' is missing" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["ascend950", "b200"])
def test_new_chips_load_and_every_unsourced_field_is_a_range(name: str) -> None:
    """Every field of ascend950 / b200 is a public citation, derived from one, or an
    assumption that carries a range around its value; both files run through the model."""
    doc = tomllib.loads((HW_DIR / f"{name}.toml").read_text(encoding="utf-8"))
    hw = load_hardware(name)
    assert hw.name == name
    for section, fields in doc.items():
        for key, entry in fields.items():
            if entry["source"].startswith(("assumption", "calibration")):
                lo, hi = entry["range"]
                assert lo <= entry["value"] <= hi, f"{section}.{key}"
    assumed = {
        k for sec in doc.values() for k, e in sec.items() if e["source"].startswith("assumption")
    }
    assert assumed <= set(hw.ranges)
    from amla_numerics.pipeline import evaluate

    res = evaluate(hw, "amla" if hw.kind == "ascend" else "fa_fp32", batch=4, kv_len=1024)
    assert 0 < res.tflops <= hw.derived_peak_tflops()


def test_new_chips_published_figures() -> None:
    """The published figures the files cite: 950 FP8 1 PFLOPS and 950DT 4 TB/s; B200
    2.25 PFLOPS dense BF16, 8 TB/s, and the derived BF16 peak within 0.3 % of NVIDIA's."""
    a, b = load_hardware("ascend950"), load_hardware("b200")
    assert a["public_peak_tflops"] == 1000.0 and a["hbm_gbps"] == 4000.0
    assert b["public_peak_tflops"] == 2250.0 and b["hbm_gbps"] == 8000.0
    assert abs(b.derived_peak_tflops() / 2250.0 - 1) < 3e-3
    # the 950's BF16 cube peak (an assumption) is half its published FP8 rate, to 0.5 %
    assert abs(a.derived_peak_tflops() / 500.0 - 1) < 5e-3
