"""Format parameters against their IEEE / OCP definitions and the dtypes that store them."""

import ml_dtypes
import numpy as np
import pytest

from amla_numerics.formats import BF16, E4M3, E5M2, FORMATS, FP16, FP32, FP64, Format, get_format


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
def test_parameters_match_the_storage_dtype(fmt):
    info = ml_dtypes.finfo(fmt.dtype)  # handles numpy and ml_dtypes types alike
    assert fmt.p == info.nmant + 1
    assert fmt.min_normal == float(info.smallest_normal)
    assert fmt.min_subnormal == float(info.smallest_subnormal)
    assert fmt.max_finite == float(info.max)
    assert fmt.unit_roundoff == 2.0**-fmt.p


def test_known_values():
    assert (FP32.max_finite, BF16.max_finite) == (
        float(np.finfo(np.float32).max),
        3.3895313892515355e38,
    )
    assert (FP16.max_finite, E4M3.max_finite, E5M2.max_finite) == (65504.0, 448.0, 57344.0)
    assert FP64.min_subnormal == 5e-324


def test_custom_format_is_float64_backed():
    f = Format.custom(p=5, emin=-6, emax=7)
    assert f.storage == np.float64 and f.dtype is None
    assert f.max_finite == (2 - 2**-4) * 2**7
    assert f.min_subnormal == 2.0**-10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p": 1, "emin": -6, "emax": 7}, "p must lie"),
        ({"p": 60, "emin": -6, "emax": 7}, "p must lie"),
        ({"p": 4, "emin": 3, "emax": 7}, "emin"),
    ],
)
def test_bad_custom_formats(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Format.custom(**kwargs)


def test_get_format_names_the_argument():
    assert get_format("bfloat16") is BF16 and get_format(np.float16) is FP16
    with pytest.raises(ValueError, match="unknown format 'fp12' for argument 'fmt'"):
        get_format("fp12")
    with pytest.raises(ValueError, match="argument 'fmt'"):
        get_format(np.int32)
