"""Private array helpers shared by the element-wise modules (exp2add, ulp).

Examples
--------
>>> import numpy as np
>>> a, b = broadcast_named(x=np.zeros(3), N=np.int64(2))
>>> a.shape, b.shape
((3,), (3,))
>>> broadcast_named(x=np.zeros(3), N=np.zeros(2))
Traceback (most recent call last):
...
ValueError: arguments 'x' (3,) and 'N' (2,) do not broadcast
"""

from __future__ import annotations

import numpy as np

__all__ = ["broadcast_named"]


def broadcast_named(**arrays: np.ndarray) -> list[np.ndarray]:
    """``np.broadcast_arrays`` of the keyword arrays, or a ValueError naming them and shapes."""
    try:
        return list(np.broadcast_arrays(*arrays.values()))
    except ValueError:
        named = " and ".join(f"{k!r} {np.shape(v)}" for k, v in arrays.items())
        raise ValueError(f"arguments {named} do not broadcast") from None
