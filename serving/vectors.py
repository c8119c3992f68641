"""Vectors on the wire: packed little-endian float32 bytes (never ``repeated float``), the one codec of recmesh.

Usage::

    data = pack(matrix)              # (n, dim) or (dim,) -> bytes, 4 * n * dim long
    rows = unpack(data, dim)         # -> read-only (n, dim) float32 view of ``data``, no copy
    query = unpack_vector(data, dim) # -> (dim,), exactly one vector
    scores = unpack_scores(data)     # -> (n,), one value per id
    values = pack_rows(matrix)       # -> one bytes value per row (e.g. one Redis value per vector)
    data = pack_item_rows(rows)      # item-table rows (hop 2 -> hop 3) -> little-endian int32 bytes
    rows = unpack_item_rows(data, n) # -> (n,) int64, each checked to be in 0..n-1
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from recmesh.redis_layout import VECTOR_DTYPE
from serving.errors import InvalidArgument

WIRE_DTYPE = VECTOR_DTYPE  # a vector read from Redis goes on the wire as it is
ROW_DTYPE = np.dtype("<i4")  # an item's row in a model version's item table


def vector_bytes(dim: int) -> int:
    """The length of one packed vector of ``dim`` values."""
    return WIRE_DTYPE.itemsize * dim


def pack(array: ArrayLike) -> bytes:
    """Row-major little-endian float32 bytes of ``array`` (converted only if it is not already)."""
    return np.ascontiguousarray(array, dtype=WIRE_DTYPE).tobytes()


def pack_rows(matrix: ArrayLike) -> list[bytes]:
    """Each row of an (n, dim) matrix packed on its own."""
    return [row.tobytes() for row in np.ascontiguousarray(matrix, dtype=WIRE_DTYPE)]


def unpack(data: bytes, dim: int) -> NDArray[np.float32]:
    """View ``data`` as an (n, dim) float32 matrix without copying; the result is read-only.

    Raises InvalidArgument if ``len(data)`` is not a multiple of ``4 * dim``.
    """
    if dim <= 0:
        raise InvalidArgument(f"vector dimension must be positive, got {dim}")
    row_bytes = vector_bytes(dim)
    if len(data) % row_bytes:
        raise InvalidArgument(
            f"packed vectors are {len(data)} bytes, not a multiple of {row_bytes} "
            f"({dim} float32 values of 4 bytes per vector)"
        )
    return np.frombuffer(data, dtype=WIRE_DTYPE).reshape(-1, dim)


def unpack_vector(data: bytes, dim: int, name: str = "vector", expected_by: str = "the model") -> NDArray[np.float32]:
    """View ``data`` as exactly one vector of shape (dim,); InvalidArgument naming ``name`` (the field) and
    ``expected_by`` (whose dimension it must have) if it is not 4 * dim bytes."""
    if len(data) != vector_bytes(dim):
        whole = len(data) % WIRE_DTYPE.itemsize == 0
        size = f"{len(data) // WIRE_DTYPE.itemsize} dims" if whole else "not a whole number of float32 values"
        raise InvalidArgument(
            f"{name} is {len(data)} bytes ({size}), {expected_by} expects {dim} dims "
            f"({vector_bytes(dim)} bytes of little-endian float32)",
            field=name,
        )
    return unpack(data, dim)[0]


def unpack_scores(data: bytes, name: str = "scores") -> NDArray[np.float32]:
    """View ``data`` as a (n,) float32 array without copying; InvalidArgument naming ``name`` (the field) if it is
    not a whole number of float32 values."""
    if len(data) % WIRE_DTYPE.itemsize:
        raise InvalidArgument(
            f"{name} is {len(data)} bytes, not a whole number of little-endian float32 values", field=name
        )
    return np.frombuffer(data, dtype=WIRE_DTYPE)


def pack_item_rows(rows: ArrayLike) -> bytes:
    """Item-table rows as little-endian int32 bytes (what RetrieveCandidates answers and Rank takes)."""
    return np.ascontiguousarray(rows, dtype=ROW_DTYPE).tobytes()


def unpack_item_rows(data: bytes, n_items: int, name: str = "rows") -> NDArray[np.int64]:
    """``data`` as (n,) int64 rows; InvalidArgument naming ``name`` when it is not whole int32 values or a row is
    outside 0..n_items-1 (rows of another model version, say)."""
    if len(data) % ROW_DTYPE.itemsize:
        raise InvalidArgument(
            f"{name} is {len(data)} bytes, not a whole number of little-endian int32 rows", field=name
        )
    rows = np.frombuffer(data, dtype=ROW_DTYPE).astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n_items):
        bad = int(np.flatnonzero((rows < 0) | (rows >= n_items))[0])
        raise InvalidArgument(
            f"{name}[{bad}] = {int(rows[bad])} is not a row of the model version's {n_items} items", field=name
        )
    return rows
