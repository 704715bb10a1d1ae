"""The zoo (tests/zoo.py): with the default verdict, every correct kernel passes every golden
case and every buggy kernel fails at least one. The kernels are independent numpy code (not
the emulator), so the verdict is tested on arithmetic it did not write."""

from __future__ import annotations

import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.testing import compare
from tests.zoo import ZOO, golden_cases, verdicts


@pytest.fixture(scope="module")
def fast_cases():
    return golden_cases(full=False)


def _check(kernel, cases):
    res = verdicts(kernel, cases)
    failed = [(name, c.reasons) for name, c in res if not c.passed]
    if kernel.correct:
        assert not failed, (kernel.name, failed)
    elif not kernel.note:
        assert failed, (kernel.name, [(n, c.rule) for n, c in res])
    return res


@pytest.mark.parametrize(
    "kernel", [k for k in ZOO if not k.name.endswith("_bf16out")], ids=lambda k: k.name
)
def test_zoo_default_verdicts(kernel, fast_cases):
    _check(kernel, fast_cases)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ZOO, ids=lambda k: k.name)
def test_zoo_default_verdicts_on_every_golden_case(kernel):
    _check(kernel, golden_cases(full=True))


def test_the_independent_amla_is_the_emulated_one_and_c1_is_not(fast_cases):
    """The zoo's AMLA, written from the paper, agrees with the emulator's to the FP32
    accumulation order; c = 1.0 passes the accuracy verdict (it is as accurate) though it
    is farther from the declared schedule than the sum order explains."""
    from amla_numerics.analysis.metrics import magnitude_scale

    (k_amla,) = [k for k in ZOO if k.name == "amla"]
    (k_c1,) = [k for k in ZOO if k.name == "amla_c1"]
    _, c = fast_cases[1]  # positive V: the rescale's errors do not cancel
    q, k, v, sc = c["q"], c["k"], c["v"], float(c["scale"])
    emu = np.asarray(flash.attention(q, k, v, "amla", scale=sc).out, np.float64)
    mag = magnitude_scale(q, k, v, sc) * 2.0**-24
    ours = np.abs(k_amla(q, k, v, sc, None)[0] - emu) / mag
    c1 = k_c1(q, k, v, sc, None)[0]
    theirs = np.abs(c1 - emu) / mag
    assert ours.max() < 256 and theirs.max() > 4 * ours.max()
    verdict = compare(c1, q, k, v, scale=sc, bit_match=["amla"], variant="amla")
    assert verdict.passed and verdict.nearest_variant is None
