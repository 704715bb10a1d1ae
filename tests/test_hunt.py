"""The adversarial hunt (``experiments/hunt.py``) run briefly: every random case over the
variants, policies, masks, splits and FP8 settings is checked against its bound, the
reference and the no-warning rule, and every failure replays from its saved file.

Open classes the bounds do not cover yet (their terms are added in ``analysis/bounds/``
and ``analysis/bounds/split.py``) are the only failures tolerated: ``cann``'s ``o_clip`` and the
``flashmla`` combine's log2 warning on a split with no live key. Anything else fails.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "hunt.py"


def _hunt():
    spec = importlib.util.spec_from_file_location("hunt", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["hunt"] = mod
    spec.loader.exec_module(mod)
    return mod


def _open_class(name: str) -> bool:
    if name.startswith("bound_violation") and "| cann |" in name:
        return True  # o_clip zeroes |O| > 1e10: no bound term yet
    return "divide by zero encountered in log2" in name and "split-flashmla" in name


@pytest.mark.slow
def test_hunt_finds_nothing_outside_the_open_classes(tmp_path):
    hunt = _hunt()
    s = hunt.hunt(minutes=3.0, seed=11, jobs=1, out_dir=tmp_path, max_cases=150)
    assert s["cases"] >= 20 and s["runs"] >= 2 * s["cases"]
    unexpected = {c: n for c, n in s["classes"].items() if not _open_class(c)}
    assert not unexpected, {c: s["examples"][c] for c in unexpected}
    for c in s["classes"]:  # every saved case replays to a failure
        assert hunt.replay(s["examples"][c]) == 1


def test_hunt_case_generator_is_deterministic_and_valid():
    import numpy as np

    hunt = _hunt()
    for i in range(30):
        a = hunt.make_case(np.random.default_rng([3, i]))
        b = hunt.make_case(np.random.default_rng([3, i]))
        assert all(np.array_equal(a[x], b[x]) for x in ("q", "k", "v"))
        for x in ("q", "k", "v"):
            assert np.isfinite(a[x].astype(np.float64)).all()
