"""``experiments/design_space.py``: its worst-case ramp against the closed-form limits.

The script's part B builds a ramp on which the row max grows by just under ``tau`` in every
block (no block rescales, so every block's P reaches ``e**tau``); the count of saturated P
elements must be zero exactly when :func:`amla_numerics.explore.limits.tau_max` says the
threshold is safe for the format and scale. The full script is ``@slow`` (minutes).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from amla_numerics.explore.limits import tau_max

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("design_space", EXPERIMENTS / "design_space.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("tau", "scale"), [(6.0, 1.0), (6.1, 1.0), (6.2, 1.0), (6.0, 2.0), (5.4, 2.0), (5.5, 2.0)]
)
def test_worst_case_ramp_saturates_exactly_beyond_the_limit(script, tau, scale):
    n = script._ramp_sat("skip_scale", tau, "e4m3", scale, 1.0)
    safe = tau <= tau_max("e4m3", "rne", scale, "ln")
    assert (n == 0) == safe, (tau, scale, n)


@pytest.mark.slow
def test_quick_run_writes_points_and_picture(script, tmp_path, capsys):
    script.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "largest saturation-free tau at S = 2**8: log2(464 / 256) = 0.858" in out
    assert (tmp_path / "design_space.json").stat().st_size > 0
    assert (tmp_path / "design_space.png").stat().st_size > 10_000
