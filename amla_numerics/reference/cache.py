"""Content-addressed disk cache of reference results.

The key is the sha256 of the package version, the method and its parameters, the exact
scale and every input array (dtype, shape and bytes after validation). Files are ``.npz``
written atomically (temporary file + ``os.replace``) and read with ``allow_pickle=False``;
each holds a sha256 of its own payload, checked on load. A file that fails to load or to
verify is reported once (a ``RuntimeWarning``), removed, and the result is recomputed.

mpf results are stored exactly as text ``"sign man_hex exp"`` triples of their binary
representation (no pickling, no decimal rounding).

Location: the ``AMLA_NUMERICS_CACHE`` directory if set (setting it turns the cache on),
else ``$XDG_CACHE_HOME/amla_numerics`` or ``~/.cache/amla_numerics`` when ``cache=True``.

Examples
--------
>>> import tempfile, numpy as np
>>> store = Store(tempfile.mkdtemp())
>>> store.save("ab" * 32, {"out": np.ones((1, 2)), "lse": np.zeros(1)})
>>> store.load("ab" * 32)["out"]
array([[1., 1.]])
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

from amla_numerics._version import __version__
from amla_numerics.reference._inputs import Problem

__all__ = ["ENV_VAR", "Store", "default_dir", "hash_arrays", "key_for", "store_for"]

ENV_VAR = "AMLA_NUMERICS_CACHE"
_REPORTED: set[str] = set()


def default_dir() -> Path:
    """``$AMLA_NUMERICS_CACHE``, else the user cache directory."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "amla_numerics"


def store_for(cache: Any) -> Store | None:
    """The store to use: ``cache=True`` or the environment variable turn it on."""
    if isinstance(cache, str | os.PathLike):
        return Store(cache)
    if not isinstance(cache, bool):
        raise TypeError(f"argument 'cache' must be a bool or a path, got {cache!r}")
    if cache or os.environ.get(ENV_VAR):
        return Store(default_dir())
    return None


def key_for(
    prob: Problem,
    method: str,
    dps: int,
    want_lse: bool,
    want_mpf: bool,
    auto_ulp: float = 1e-3,
) -> str:
    """sha256 hex digest of everything the result depends on (``auto_ulp``: method
    ``"auto"``'s threshold, in the key only where it is not the default 1e-3)."""
    h = hashlib.sha256()
    head = f"amla_numerics {__version__} reference v1|{method}|{dps}|{want_lse}|{want_mpf}|"
    if auto_ulp != 1e-3:
        head += f"auto_ulp={auto_ulp!r}|"
    h.update(head.encode())
    h.update(prob.scale.token().encode())
    h.update(repr((prob.batch_shape, prob.precision, prob.dtypes)).encode())
    hash_arrays(h, (prob.q, prob.k, prob.v, prob.mask))
    return h.hexdigest()


def hash_arrays(h: Any, arrays: Iterable[Any], *, dtype_name: bool = False) -> None:
    """Feed each array's dtype, shape and bytes (``|none`` for ``None``) into the hash ``h``.

    ``dtype_name=True`` adds ``dtype.name``: ``dtype.str`` alone is ``<V2`` for every
    2-byte ml_dtypes type, so a key that holds no other dtype record needs it.

    Examples
    --------
    >>> import hashlib
    >>> a, b = hashlib.sha256(), hashlib.sha256()
    >>> hash_arrays(a, [np.zeros(2), None])
    >>> hash_arrays(b, [np.zeros(2, dtype=np.float32), None])
    >>> a.hexdigest() == b.hexdigest()
    False
    """
    for arr in arrays:
        if arr is None:
            h.update(b"|none")
            continue
        a = np.ascontiguousarray(arr)
        name = a.dtype.name if dtype_name else ""
        h.update(f"|{a.dtype.str}{name}{a.shape}".encode())
        h.update(a.tobytes())


def _encode(a: np.ndarray) -> tuple[np.ndarray, bool]:
    if a.dtype != object:
        return a, False
    flat = []
    for x in a.reshape(-1):
        s, man, e, _ = x._mpf_ if isinstance(x, mpmath.mpf) else mpmath.mpf(x)._mpf_
        flat.append(f"{s} {int(man):x} {e}" if man or not e else f"special {mpmath.nstr(x)}")
    return np.array(flat, dtype=str).reshape(a.shape), True


def _decode(a: np.ndarray) -> np.ndarray:
    from mpmath.libmp import from_man_exp

    out = np.empty(a.shape, dtype=object)
    flat = out.reshape(-1)
    for n, txt in enumerate(a.reshape(-1).tolist()):
        parts = txt.split()
        if parts[0] == "special":
            flat[n] = mpmath.mpf(parts[1])
            continue
        man = int(parts[1], 16) * (-1 if parts[0] == "1" else 1)
        flat[n] = mpmath.mp.make_mpf(from_man_exp(man, int(parts[2])))
    return out


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Store:
    """A cache directory of ``<key>.npz`` files."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The stored result, or None (missing, or corrupted: reported once and removed)."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {n: z[n] for n in z.files}
            digest = str(data.pop("__digest__"))
            flags = data.pop("__mpf__")
            if _digest(data) != digest:
                raise ValueError("checksum mismatch")
            return {n: (_decode(a) if n in set(flags.tolist()) else a) for n, a in data.items()}
        except Exception as exc:  # any unreadable file is a cache miss
            if str(p) not in _REPORTED:
                _REPORTED.add(str(p))
                warnings.warn(
                    f"corrupted reference cache file {p} ({exc}); recomputing",
                    RuntimeWarning,
                    stacklevel=3,
                )
            p.unlink(missing_ok=True)
            return None

    def save(self, key: str, result: dict[str, np.ndarray]) -> None:
        """Write atomically: a temporary file in the same directory, then ``os.replace``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data, mpf_names = {}, []
        for n, a in result.items():
            enc, is_mpf = _encode(np.asarray(a))
            data[n] = enc
            if is_mpf:
                mpf_names.append(n)
        payload = dict(data)
        payload["__digest__"] = np.array(_digest(data))
        payload["__mpf__"] = np.array(mpf_names, dtype=str)
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **payload)  # type: ignore[arg-type]  # numpy's stub types the kwargs as bool
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
