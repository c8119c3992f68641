"""Vectors on the wire: packed little-endian float32 bytes (never ``repeated float``).

Usage::

    data = pack(matrix)              # (n, dim) or (dim,) -> bytes, 4 * n * dim long
    rows = unpack(data, dim)         # -> read-only (n, dim) float32 view of ``data``, no copy
    query = unpack_vector(data, dim) # -> (dim,), exactly one vector
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from recmesh.redis_layout import VECTOR_DTYPE
from serving.errors import InvalidArgument

WIRE_DTYPE = VECTOR_DTYPE  # a vector read from Redis goes on the wire as it is


def pack(array: ArrayLike) -> bytes:
    """Row-major little-endian float32 bytes of ``array`` (converted only if it is not already)."""
    return np.ascontiguousarray(array, dtype=WIRE_DTYPE).tobytes()


def unpack(data: bytes, dim: int) -> NDArray[np.float32]:
    """View ``data`` as an (n, dim) float32 matrix without copying; the result is read-only.

    Raises InvalidArgument if ``len(data)`` is not a multiple of ``4 * dim``.
    """
    if dim <= 0:
        raise InvalidArgument(f"vector dimension must be positive, got {dim}")
    row_bytes = WIRE_DTYPE.itemsize * dim
    if len(data) % row_bytes:
        raise InvalidArgument(
            f"packed vectors are {len(data)} bytes, not a multiple of {row_bytes} "
            f"({dim} float32 values of 4 bytes per vector)"
        )
    return np.frombuffer(data, dtype=WIRE_DTYPE).reshape(-1, dim)


def unpack_vector(data: bytes, dim: int) -> NDArray[np.float32]:
    """View ``data`` as exactly one vector of shape (dim,); InvalidArgument if it is not 4 * dim bytes."""
    if len(data) != WIRE_DTYPE.itemsize * dim:
        raise InvalidArgument(
            f"query vector is {len(data)} bytes, expected {WIRE_DTYPE.itemsize * dim} "
            f"({dim} float32 values, the model's dimension)"
        )
    return unpack(data, dim)[0]
