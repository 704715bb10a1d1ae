"""Tensor dumps: read and write ``.npz`` and ``.safetensors`` files exactly as stored.

A *dump* is one file of named arrays (a kernel's ``q``, ``k``, ``v``, ``out``, ...). Arrays
come back bit for bit as written, in their own dtype (float64/32/16, bfloat16, FP8, bool,
integers): nothing is rounded, cast or reshaped here.

Formats
-------
``.safetensors``
    Read with the ``safetensors`` package's numpy API. BF16 and FP8 (``F8_E4M3``,
    ``F8_E5M2``) are native dtypes of the format and come back as ``ml_dtypes`` arrays
    (FP8 tensors are read from their byte range, which the package validates, because its
    numpy loader has no FP8 dtype). Metadata (str -> str) is kept.
``.npz``
    Read with ``numpy.load(allow_pickle=False)``. numpy stores ``ml_dtypes`` arrays as raw
    void bytes, so on reading:

    - a 2-byte void array (``|V2``) is **bfloat16** (the only 2-byte ``ml_dtypes`` float);
    - a 1-byte array (``|V1``, and ``uint8``/``int8`` when hinted) is **FP8 and needs a dtype
      hint**, because E4M3 and E5M2 share the byte size: either a string entry
      ``__dtypes__`` in the file holding a JSON object such as ``{"q": "float8_e4m3fn"}``
      (what :func:`write_dump` writes for every non-numpy dtype), or the ``dtypes=`` argument
      (CLI: ``--dtype q=float8_e4m3fn``). A hint may also name ``bfloat16`` for a ``uint16``
      array of raw BF16 bits. A hint never converts values: it only says how to read bytes
      of the right size, and a hint on an array of another size is an error.

Errors are one sentence naming the file: unreadable, corrupt or truncated file, an
unknown hint, a void array without its hint.

Examples
--------
>>> import tempfile, os, numpy as np, ml_dtypes
>>> d = tempfile.mkdtemp()
>>> x = np.array([[1.5, -2.0]], dtype=ml_dtypes.bfloat16)
>>> p = write_dump(os.path.join(d, "a.npz"), {"q": x, "scale": np.float64(0.125)})
>>> dump = read_dump(p)
>>> dump.arrays["q"].dtype.name, dump.arrays["q"].tolist() == x.tolist()
('bfloat16', True)
>>> p2 = write_dump(os.path.join(d, "a.safetensors"), {"q": x})
>>> read_dump(p2).arrays["q"].dtype.name
'bfloat16'
"""

from __future__ import annotations

import ast
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "DTYPE_NAMES",
    "DUMP_SUFFIXES",
    "Dump",
    "find_dumps",
    "parse_dtype_hints",
    "read_dump",
    "resolve_dtype",
    "write_dump",
]

#: File suffixes recognised as dumps.
DUMP_SUFFIXES: tuple[str, ...] = (".npz", ".safetensors")

#: Accepted dtype names in hints (aliases included) -> numpy dtype.
DTYPE_NAMES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "fp64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "fp32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "fp16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "e5m2": np.dtype(ml_dtypes.float8_e5m2),
}

#: safetensors dtype codes of the ml_dtypes formats (read from their bytes).
_ST_ML = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_HINT_KEY = "__dtypes__"
_META_KEY = "__metadata__"


@dataclass(frozen=True)
class Dump:
    """One dump file: its arrays exactly as stored, and its metadata.

    Attributes
    ----------
    path : str
    format : {"npz", "safetensors"}
    arrays : dict[str, numpy.ndarray]
        Name -> array in its stored dtype (bfloat16/FP8 as ``ml_dtypes`` dtypes).
    metadata : dict[str, str]
        safetensors metadata, or the JSON object of an ``.npz``'s ``__metadata__`` entry.
    """

    path: str
    format: str
    arrays: dict[str, np.ndarray] = field(repr=False)
    metadata: dict[str, str] = field(default_factory=dict)

    def require(self, *names: str) -> None:
        """Raise ValueError naming the first of ``names`` the dump lacks."""
        for name in names:
            if name not in self.arrays:
                have = ", ".join(sorted(self.arrays)) or "none"
                raise ValueError(f"{self.path}: missing array {name!r} (arrays present: {have})")


def resolve_dtype(name: str) -> np.dtype:
    """A dtype from its hint name (``DTYPE_NAMES``); ValueError listing them otherwise.

    >>> resolve_dtype("e4m3").name
    'float8_e4m3fn'
    """
    key = str(name).strip().lower()
    if key not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[key]


def parse_dtype_hints(items: Iterable[str]) -> dict[str, str]:
    """``["q=float8_e4m3fn", "k=e4m3"]`` -> ``{"q": "float8_e4m3fn", "k": "e4m3"}`` (checked).

    >>> parse_dtype_hints(["q=e4m3"])
    {'q': 'e4m3'}
    """
    hints: dict[str, str] = {}
    for item in items:
        name, sep, dtype = str(item).partition("=")
        if not sep or not name.strip() or not dtype.strip():
            raise ValueError(
                f"--dtype must look like NAME=DTYPE (e.g. q=float8_e4m3fn), got {item!r}"
            )
        resolve_dtype(dtype)
        hints[name.strip()] = dtype.strip()
    return hints


def find_dumps(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand the command line's DUMP arguments: files as given, directories to every dump
    in them (sorted, not recursive). ValueError for a missing path or an empty directory."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.suffix in DUMP_SUFFIXES and f.is_file())
            if not inside:
                raise ValueError(f"{str(p)!r} holds no .npz or .safetensors dump")
            found.extend(inside)
        elif p.exists():
            found.append(p)
        else:
            raise ValueError(f"no such file or directory: {str(p)!r}")
    return found


def read_dump(path: str | os.PathLike, *, dtypes: Mapping[str, str] | None = None) -> Dump:
    """Read a ``.npz`` or ``.safetensors`` dump exactly (see the module docstring).

    Parameters
    ----------
    path : path-like
    dtypes : mapping, optional
        Dtype hints ``{array name: dtype name}`` for raw-byte arrays (FP8 in ``.npz``);
        they take precedence over the file's own ``__dtypes__`` entry.

    Raises
    ------
    ValueError
        Unreadable, corrupt or truncated file; unknown suffix; an FP8 array without a hint;
        a hint that does not fit the array (all one sentence naming the file).
    """
    p = Path(path)
    hints = dict(dtypes or {})
    for dt in hints.values():
        resolve_dtype(dt)
    if p.suffix == ".npz":
        return _read_npz(p, hints)
    if p.suffix == ".safetensors":
        return _read_safetensors(p, hints)
    raise ValueError(f"{str(p)!r} is not a dump: expected a .npz or .safetensors file")


def _read_npz(p: Path, hints: dict[str, str]) -> Dump:
    try:
        raw = {}
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            for name in z.files:
                try:
                    raw[name] = z[name]
                except ValueError as exc:
                    if "descriptor" not in str(exc):
                        raise
                    raw[name] = _raw_member(z.zip, name)  # e.g. ml_dtypes' E5M2 ("<f1")
    except FileNotFoundError:
        raise ValueError(f"{str(p)!r}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise ValueError(f"{str(p)!r} is corrupt or truncated: {_one_line(exc)}") from None
    meta: dict[str, str] = {}
    if _META_KEY in raw:
        meta = _json_entry(raw.pop(_META_KEY), p, _META_KEY)
    file_hints = _json_entry(raw.pop(_HINT_KEY), p, _HINT_KEY) if _HINT_KEY in raw else {}
    for dt in file_hints.values():
        try:
            resolve_dtype(dt)
        except ValueError as exc:
            raise ValueError(f"{str(p)!r}: {_HINT_KEY}: {exc}") from None
    file_hints.update(hints)
    arrays = {}
    for name, arr in raw.items():
        arrays[name] = _apply_hint(arr, file_hints.get(name), name, p)
    return Dump(str(p), "npz", arrays, {str(k): str(v) for k, v in meta.items()})


def _raw_member(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """An ``.npy`` member whose dtype numpy cannot name (ml_dtypes writes E5M2 as ``<f1``):
    its bytes as unsigned integers of the stored item size, for a dtype hint to name."""
    with zf.open(name + ".npy") as fh:
        version = np.lib.format.read_magic(fh)
        hlen_bytes = 2 if version == (1, 0) else 4
        hlen = int.from_bytes(fh.read(hlen_bytes), "little")
        header = ast.literal_eval(fh.read(hlen).decode("latin1"))
        data = fh.read()
    descr = str(header["descr"])
    size = int(descr[2:]) if descr[2:].isdigit() else 0
    if size not in (1, 2) or header.get("fortran_order"):
        raise ValueError(f"array {name!r} has an unreadable dtype descriptor {descr!r}")
    shape = tuple(header["shape"])
    arr = np.frombuffer(data, dtype=np.uint8 if size == 1 else np.uint16)
    return arr[: int(np.prod(shape, dtype=np.int64))].reshape(shape).view(f"V{size}")


def _json_entry(arr: np.ndarray, p: Path, key: str) -> dict[str, Any]:
    try:
        value = json.loads(str(arr[()]))
    except (ValueError, TypeError, IndexError):
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"{str(p)!r}: entry {key!r} must be a JSON object string")
    return value


def _apply_hint(arr: np.ndarray, hint: str | None, name: str, p: Path) -> np.ndarray:
    if hint is None:
        if arr.dtype.kind == "V":
            if arr.dtype.itemsize == 2:
                return arr.view(ml_dtypes.bfloat16)  # the only 2-byte ml_dtypes float
            raise ValueError(
                f"{str(p)!r}: array {name!r} is raw {arr.dtype.itemsize}-byte data "
                f"({arr.dtype.str}); say its format with a dtype hint "
                f"(e.g. --dtype {name}=float8_e4m3fn, or a "
                f"{_HINT_KEY} entry in the file)"
            )
        return arr
    want = resolve_dtype(hint)
    if arr.dtype == want:
        return arr
    if arr.dtype.kind in "Vui" and arr.dtype.itemsize == want.itemsize:
        return arr.view(want)
    raise ValueError(
        f"{str(p)!r}: dtype hint {hint!r} for array {name!r} does not fit its stored dtype "
        f"{arr.dtype} (a hint reinterprets raw bytes of the same size, it never converts)"
    )


def _read_safetensors(p: Path, hints: dict[str, str]) -> Dump:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a declared dependency
        raise ValueError("reading .safetensors needs the 'safetensors' package") from None
    if not p.exists():
        raise ValueError(f"{str(p)!r}: no such file")
    arrays: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(p), framework="np") as f:
            meta = dict(f.metadata() or {})
            for name in f.keys():
                code = f.get_slice(name).get_dtype()
                if code in _ST_ML and code != "BF16":
                    arrays[name] = _st_bytes(p, name, _ST_ML[code])
                else:
                    arrays[name] = np.array(f.get_tensor(name))  # our own, writable copy
    except ValueError:
        raise
    except Exception as exc:  # SafetensorError and OS errors: the file is not usable
        raise ValueError(f"{str(p)!r} is corrupt or truncated: {_one_line(exc)}") from None
    for name, dt in hints.items():
        if name in arrays:
            arrays[name] = _apply_hint(arrays[name], dt, name, p)
    return Dump(str(p), "safetensors", arrays, {str(k): str(v) for k, v in meta.items()})


def _st_bytes(p: Path, name: str, dtype: np.dtype) -> np.ndarray:
    """One tensor read from its byte range (the header was validated by ``safe_open``)."""
    with open(p, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        info = header[name]
        lo, hi = info["data_offsets"]
        fh.seek(8 + n + lo)
        data = fh.read(hi - lo)
    shape = tuple(int(s) for s in info["shape"])
    if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError(f"{str(p)!r} is truncated: tensor {name!r} is short")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def write_dump(
    path: str | os.PathLike,
    arrays: Mapping[str, Any],
    *,
    format: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``arrays`` to a dump, exactly (the format from ``format`` or the suffix).

    ``.npz`` files get a ``__dtypes__`` entry naming every non-numpy dtype (bfloat16, FP8)
    so that they read back as written; safetensors stores those dtypes natively. The file
    is written to a temporary name and renamed, so a reader never sees half a file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    p = Path(path)
    fmt = format or p.suffix.lstrip(".")
    if fmt not in ("npz", "safetensors"):
        raise ValueError(f"argument 'format' must be 'npz' or 'safetensors', got {fmt!r}")
    arrs = {str(k): np.asarray(v).copy(order="C") for k, v in arrays.items()}
    for k in arrs:
        if k in (_HINT_KEY, _META_KEY):
            raise ValueError(f"array name {k!r} is reserved")
    tmp = p.with_name(p.name + ".tmp")
    try:
        if fmt == "npz":
            extra = {
                k: a.dtype.name
                for k, a in arrs.items()
                if a.dtype.name in DTYPE_NAMES and a.dtype.type.__module__ != "numpy"
            }
            # ml_dtypes arrays as raw bytes (numpy cannot read back every ml_dtypes
            # descriptor, e.g. E5M2's "<f1"), named by the hint entry
            payload: dict[str, Any] = {
                k: (a.view(f"V{a.dtype.itemsize}") if k in extra else a) for k, a in arrs.items()
            }
            if extra:
                payload[_HINT_KEY] = np.array(json.dumps(extra, sort_keys=True))
            if metadata:
                payload[_META_KEY] = np.array(json.dumps(dict(metadata), sort_keys=True))
            with open(tmp, "wb") as fh:
                np.savez(fh, **payload)
        else:
            from safetensors.numpy import save_file

            save_file(arrs, str(tmp), metadata=dict(metadata) if metadata else None)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
