"""Dump IO: every dtype bit for bit in both formats, raw-byte hints, bad files as one sentence."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from amla_numerics.dumps import find_dumps, parse_dtype_hints, read_dump, write_dump

DTYPES = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"u{a.dtype.itemsize}")


def _all_patterns(dtype: str, shape=(3, 4, 5)) -> np.ndarray:
    """Random bit patterns of ``dtype`` (NaN/inf included): a round trip must keep all bits."""
    dt = np.dtype(getattr(ml_dtypes, dtype, None) or dtype)
    rng = np.random.default_rng(len(dtype))
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    return raw.view(dt).reshape(shape)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_bit_exact_with_leading_dims(tmp_path, fmt, dtype):
    a = _all_patterns(dtype)
    arrays = {"q": a, "mask": np.arange(6).reshape(2, 3) % 2 == 0, "scale": np.float64(0.1)}
    p = write_dump(tmp_path / f"d.{fmt}", arrays, metadata={"case": "x"})
    d = read_dump(p)
    assert d.format == fmt and d.metadata == {"case": "x"}
    b = d.arrays["q"]
    assert b.dtype == a.dtype and b.shape == a.shape
    assert np.array_equal(_bits(b), _bits(a))
    assert d.arrays["mask"].dtype == bool and np.array_equal(d.arrays["mask"], arrays["mask"])
    assert d.arrays["scale"].shape == () and float(d.arrays["scale"]) == 0.1


def test_user_savez_of_bfloat16_is_void_v2_and_reads_as_bfloat16(tmp_path):
    a = _all_patterns("bfloat16", (7, 3))
    np.savez(tmp_path / "u.npz", q=a)  # what a user does: numpy writes |V2
    with np.load(tmp_path / "u.npz") as z:
        assert z["q"].dtype.str == "|V2"
    b = read_dump(tmp_path / "u.npz").arrays["q"]
    assert b.dtype == ml_dtypes.bfloat16 and np.array_equal(_bits(b), _bits(a))


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_in_npz_needs_a_hint(tmp_path, dtype):
    a = _all_patterns(dtype, (4, 6))
    np.savez(tmp_path / "u.npz", q=a)  # numpy writes |V1 (E4M3) or an unreadable "<f1" (E5M2)
    with pytest.raises(ValueError, match=r"array 'q' is raw 1-byte data.*--dtype q="):
        read_dump(tmp_path / "u.npz")
    b = read_dump(tmp_path / "u.npz", dtypes={"q": dtype}).arrays["q"]
    assert b.dtype == a.dtype and np.array_equal(_bits(b), _bits(a))
    # the hint can live in the file, and raw uint8 bytes work too
    np.savez(tmp_path / "h.npz", q=a.view(np.uint8), __dtypes__=np.array(json.dumps({"q": dtype})))
    c = read_dump(tmp_path / "h.npz").arrays["q"]
    assert c.dtype == a.dtype and np.array_equal(_bits(c), _bits(a))


def test_a_hint_never_converts(tmp_path):
    np.savez(tmp_path / "f.npz", q=np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="does not fit its stored dtype float32"):
        read_dump(tmp_path / "f.npz", dtypes={"q": "bfloat16"})
    with pytest.raises(ValueError, match="unknown dtype 'fp7'"):
        read_dump(tmp_path / "f.npz", dtypes={"q": "fp7"})
    assert parse_dtype_hints(["q=e4m3", "k = bf16"]) == {"q": "e4m3", "k": "bf16"}
    with pytest.raises(ValueError, match="NAME=DTYPE"):
        parse_dtype_hints(["q"])


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_bad_files_are_one_sentence(tmp_path, fmt):
    a = np.arange(4096, dtype=np.float32).reshape(64, 64)
    good = write_dump(tmp_path / f"g.{fmt}", {"q": a, "k": a})
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage": b"not a dump at all" * 10,
        "empty": b"",
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.{fmt}"
        p.write_bytes(content)
        with pytest.raises(ValueError) as info:
            read_dump(p)
        msg = str(info.value)
        assert str(p) in msg and "\n" not in msg, (name, msg)
    with pytest.raises(ValueError, match="no such file"):
        read_dump(tmp_path / f"missing.{fmt}")


def test_corrupt_npz_member_is_detected(tmp_path):
    a = np.arange(4096, dtype=np.float32)
    p = write_dump(tmp_path / "c.npz", {"q": a})
    raw = bytearray(p.read_bytes())
    i = raw.index(a[1000:1001].tobytes())
    raw[i] ^= 0xFF  # flip bits inside the stored data: the zip CRC no longer matches
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_dump(p)


def test_find_dumps_expands_directories(tmp_path):
    write_dump(tmp_path / "b.safetensors", {"q": np.ones((1, 1))})
    write_dump(tmp_path / "a.npz", {"q": np.ones((1, 1))})
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_dumps([tmp_path])] == ["a.npz", "b.safetensors"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"holds no \.npz or \.safetensors"):
        find_dumps([empty])
    with pytest.raises(ValueError, match="no such file or directory"):
        find_dumps([tmp_path / "nope.npz"])
    with pytest.raises(ValueError, match="not a dump"):
        read_dump(tmp_path / "notes.txt")
