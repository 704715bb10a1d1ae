"""The one bound check against hand-built cases that must pass and cases that must fail."""

from __future__ import annotations

import math

import numpy as np

from amla_numerics.analysis.boundcheck import bound_check
from amla_numerics.analysis.metrics import U_FP32, condition_aware

REF = np.array([1.0, -2.0, 0.5, 0.0])
MAG = np.array([1.0, 2.0, 0.5, 1.0])


def test_an_output_within_its_bound_passes():
    out = REF + np.array([2.0**-10, -(2.0**-9), 0.0, 0.0])  # exact errors
    c = bound_check(out, REF, np.full(4, 2.0**-8), mag=MAG)
    assert c.violations == 0 and c.n_covered == 4
    assert c.ratio == 0.5  # 2**-9 / 2**-8, the worst element
    assert c.bound_cond_max == condition_aware(2.0**-8, 0.5) == 2.0**-7 / U_FP32


def test_an_error_just_above_its_bound_fails():
    out = REF.copy()
    out[2] = np.nextafter(REF[2] + 1e-3, np.inf)
    c = bound_check(out, REF, np.full(4, 1e-3), mag=MAG)
    assert c.violations == 1 and c.ratio > 1


def test_a_missing_bound_or_a_nonfinite_output_can_never_pass():
    # NaN compared with '>' is False: the check must not rely on it
    c = bound_check(REF, REF, np.array([1.0, np.nan, 1.0, 1.0]), mag=MAG)
    assert c.violations == 1 and c.ratio == math.inf
    out = REF.copy()
    out[0] = np.nan
    c = bound_check(out, REF, np.ones(4), mag=MAG)
    assert c.violations == 1 and c.ratio == math.inf
    out[0] = np.inf
    assert bound_check(out, REF, np.ones(4), mag=MAG).violations == 1


def test_uncovered_elements_are_not_judged():
    out = REF.copy()
    out[3] = np.nan  # garbage the emulator counted as a hazard
    covered = np.array([True, True, True, False])
    c = bound_check(out, REF, np.ones(4), mag=MAG, covered=covered)
    assert c.violations == 0 and c.n_covered == 3
    nothing = bound_check(out, REF, np.ones(4), mag=MAG, covered=np.zeros(4, bool))
    assert nothing.n_covered == 0 and math.isnan(nothing.ratio)


def test_condition_aware_scale_at_zero():
    assert condition_aware([0.0, 1.0, 2.0**-24], [0.0, 0.0, 1.0]).tolist() == [0.0, math.inf, 1.0]
