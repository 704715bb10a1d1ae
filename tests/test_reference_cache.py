"""Input validation, the content-addressed cache."""

from __future__ import annotations

import warnings

import ml_dtypes
import mpmath
import numpy as np
import pytest

from amla_numerics.reference import attention, dispatch
from amla_numerics.reference import cache as cache_mod

Q = np.array([[1.0, 0.5]], dtype=np.float32)
K = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
V = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.25]], dtype=np.float32)


@pytest.fixture(autouse=True)
def _no_env_cache(monkeypatch):
    monkeypatch.delenv(cache_mod.ENV_VAR, raising=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": np.ones((3, 3))}, "'k'"),
        ({"v": np.ones((4, 2))}, "'v'"),
        ({"q": np.array([[np.nan, 0.0]])}, "'q'"),
        ({"k": np.array([[np.inf, 0.0]] * 3)}, "'k'"),
        ({"v": np.ones((0, 2))}, "'v'"),
        ({"q": np.ones((0, 2))}, "'q'"),
        ({"q": np.ones(2)}, "'q'"),
        ({"dps": 14}, "'dps'"),
        ({"dps": 20.5}, "'dps'"),
        ({"method": "exact"}, "'method'"),
        ({"jobs": 0}, "'jobs'"),
        ({"scale": float("nan")}, "'scale'"),
        ({"mask": np.array([[0.0, np.nan, 0.0]])}, "'mask'"),
        ({"mask": np.array([[0.0, np.inf, 0.0]])}, "'mask'"),
        ({"mask": np.zeros((2, 2))}, "'mask'"),
        ({"q": np.ones((2, 1, 2)), "k": np.ones((3, 3, 2)), "v": np.ones((3, 3, 2))}, "broadcast"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = {"q": Q, "k": K, "v": V}
    args.update({n: kwargs.pop(n) for n in ("q", "k", "v") if n in kwargs})
    with pytest.raises(ValueError, match=match):
        attention(args["q"], args["k"], args["v"], **kwargs)


@pytest.mark.parametrize("dtype", [int, np.longdouble, complex])
def test_non_float_dtype_is_type_error(dtype):
    with pytest.raises(TypeError, match="'q'"):
        attention(np.ones((1, 2), dtype=dtype), K, V)


def test_cache_roundtrip_and_hit(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path))
    first = attention(Q, K, V, method="mpmath", dps=20, return_lse=True)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed despite a cache hit")

    monkeypatch.setattr(dispatch, "_compute", boom)
    again = attention(Q, K, V, method="mpmath", dps=20, return_lse=True)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_cache_key_depends_on_inputs_and_parameters(tmp_path):
    attention(Q, K, V, method="fast", cache=str(tmp_path))
    attention(Q, K, V, 0.5, method="fast", cache=str(tmp_path))
    attention(Q, K, V.astype(ml_dtypes.bfloat16), method="fast", cache=str(tmp_path))
    attention(Q, K, V, method="mpmath", dps=20, cache=str(tmp_path))
    assert len(list(tmp_path.glob("*.npz"))) == 4


def test_cache_mpf_exact(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path))
    a = attention(Q, K, V, method="mpmath", dps=40, return_mpf=True)
    b = attention(Q, K, V, method="mpmath", dps=40, return_mpf=True)
    assert b.dtype == object
    pairs = zip(a.ravel(), b.ravel(), strict=True)
    assert all(x._mpf_ == y._mpf_ and x._mpf_[1].bit_length() > 100 for x, y in pairs)


def test_corrupted_cache_reported_once_and_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path))
    good = attention(Q, K, V, method="fast")
    (path,) = tmp_path.glob("*.npz")
    for damage in (b"garbage", None):
        if damage is None:  # a valid npz whose payload no longer matches its checksum
            with np.load(attention_path := path, allow_pickle=False) as z:
                data = {n: z[n] for n in z.files}
            data["out"] = data["out"] + 1.0
            np.savez(attention_path, **data)
        else:
            path.write_bytes(damage)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            again = attention(Q, K, V, method="fast")
            attention(Q, K, V, method="fast")  # now a clean hit: no second report
        np.testing.assert_array_equal(again, good)
        assert sum("corrupted" in str(w.message) for w in rec) == (1 if damage else 0)


def test_cache_off_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    attention(Q, K, V, method="fast")
    assert not list(tmp_path.rglob("*.npz"))
    attention(Q, K, V, method="fast", cache=True)
    assert len(list(tmp_path.rglob("*.npz"))) == 1


def test_mpmath_context_untouched_by_cache(tmp_path):
    before = mpmath.mp.prec
    attention(Q, K, V, method="mpmath", dps=30, return_mpf=True, cache=str(tmp_path))
    attention(Q, K, V, method="mpmath", dps=30, return_mpf=True, cache=str(tmp_path))
    assert mpmath.mp.prec == before
