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


def _check(kernel, cases, every_case=False):
    """A correct kernel is judged on every case; a buggy one until its first failure beyond
    its scheme's hazards (the property asserted), unless ``every_case``."""
    res = []
    for case in cases:
        res += verdicts(kernel, [case])
        name, comp = res[-1]
        if (
            not (kernel.correct or every_case or comp.passed)
            and name.split("_h")[0] not in kernel.hazards
        ):
            break
    failed = [(name, c.reasons) for name, c in res if not c.passed]
    beyond = [n for n, _ in failed if n.split("_h")[0] not in kernel.hazards]
    if kernel.correct:
        # a correct kernel fails nothing but the cases of its scheme's published hazard
        assert not beyond, (kernel.name, failed)
    elif not kernel.note:
        assert beyond, (kernel.name, [(n, c.rule) for n, c in res])
    return res


@pytest.mark.parametrize(
    "kernel", [k for k in ZOO if not k.name.endswith("_bf16out")], ids=lambda k: k.name
)
def test_zoo_default_verdicts(kernel, fast_cases):
    _check(kernel, fast_cases)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ZOO, ids=lambda k: k.name)
def test_zoo_default_verdicts_on_every_golden_case(kernel):
    _check(kernel, golden_cases(full=True), every_case=True)


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


@pytest.mark.parametrize("standard", ["flash-attn", "torch-sdpa", "cann-l0", "cann-l2", "bound"])
def test_named_standards_on_the_zoo(standard, fast_cases):
    """Each standard passes the correct float32 kernels and the correctly rounded answer,
    and fails the grossest bugs (a dropped partial block, a wrong scale)."""
    _, c = fast_cases[0]
    args = (c["q"], c["k"], c["v"])
    kw = dict(scale=c["scale"], mask=c["mask"], bit_match=False, standard=standard)
    by = {k.name: k for k in ZOO}
    for kname in ("fa32_b128", "fa32_b512_reverse", "fa32_p32", "correctly_rounded"):
        out, _ = by[kname](*args, float(c["scale"]), c["mask"])
        v = compare(out, *args, **kw)
        assert v.passed, (standard, kname, v.reasons)
    for kname in ("dropped_partial_block", "wrong_scale"):
        out, _ = by[kname](*args, float(c["scale"]), c["mask"])
        v = compare(out, *args, **kw)
        assert not v.passed and v.reasons, (standard, kname)
        assert v.reasons[0].endswith(f"(standard {standard})")


def test_cann_standard_against_a_baseline_output(fast_cases):
    """The CANN ratios against a given baseline: the baseline itself passes at every level;
    a kernel with 3 x its error fails L2 (MARE 2) and passes L0 (MARE 10, RMSE 2 fails)."""
    _, c = fast_cases[2]
    args = (c["q"], c["k"], c["v"])
    from amla_numerics.testing import reference_for

    ref = reference_for(*args, c["scale"])[0]
    rng = np.random.default_rng(0)
    base = (ref * (1 + 2.0**-12 * rng.standard_normal(ref.shape))).astype(np.float32)
    worse = (ref + 3 * (base.astype(np.float64) - ref)).astype(np.float32)
    kw = dict(scale=c["scale"], bit_match=False, baseline=base)
    for level in ("cann-l0", "cann-l1", "cann-l2"):
        assert compare(base, *args, standard=level, **kw).passed
    l2 = compare(worse, *args, standard="cann-l2", **kw)
    assert not l2.passed and l2.standard_figures["cann_mare_ratio"] == pytest.approx(1.5, 0.01)
    l0 = compare(worse, *args, standard="cann-l0", **kw)
    assert l0.standard_figures["cann_mare_ratio"] < 1 < l0.standard_figures["cann_rmse_ratio"]


@pytest.mark.parametrize(
    ("kname", "cause"),
    [
        ("wrong_scale", "wrong scale: the output fits a softmax scale of 0.04166"),
        ("dropped_partial_block", "dropped block:"),
        ("causal_off_by_one", "masked keys leaking:"),
        ("lse_one_block_early", "lse inconsistent with out"),
        ("missed_rescale", "missed rescale: the output fits O accumulated over blocks of 512"),
    ],
)
def test_diagnosis_names_the_bug(kname, cause, fast_cases):
    (kernel,) = [k for k in ZOO if k.name == kname]
    name, comp = verdicts(kernel, fast_cases[:1])[0]
    assert not comp.passed and comp.diagnosis.startswith(cause), (name, comp.diagnosis)
    if kname == "dropped_partial_block":
        assert "keys 1024..1099 left out" in comp.diagnosis
    (good,) = [k for k in ZOO if k.name == "fa32_b512"]
    assert verdicts(good, fast_cases[:1])[0][1].diagnosis == ""


def test_diagnosis_names_a_doubled_block(fast_cases):
    """A float32 kernel that adds its last partial block of 512 keys twice (to O and l)."""
    _, c = fast_cases[0]
    q, k, v = (np.asarray(c[x], np.float64) for x in ("q", "k", "v"))
    s = (q @ k.T) * float(c["scale"])
    if c["mask"] is not None:
        s = np.where(c["mask"], s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    n = k.shape[0]
    p[..., (n - 1) // 512 * 512 :] *= 2.0
    out = ((p @ v) / p.sum(axis=-1, keepdims=True)).astype(np.float32)
    comp = compare(out, c["q"], c["k"], c["v"], scale=c["scale"], mask=c["mask"], bit_match=False)
    assert not comp.passed
    lo = (n - 1) // 512 * 512  # block sizes that end in the same keys fit equally well
    assert comp.diagnosis.startswith("doubled block: the output fits the last block of")
    assert f"(keys {lo}..{n - 1}) counted twice" in comp.diagnosis, comp.diagnosis
