"""Packed little-endian float32, the wire form of every vector field of recmesh.v1, without numpy.

query = pack([0.1, 0.2, 0.3])             # RecommendOptions.query_vector, FindCandidatesRequest.query_vector
rows = unpack_rows(reply.vectors, reply.dim)  # GetItemEmbeddingsResponse: one list of floats per item
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

FLOAT32_BYTES = 4


def pack(values: Iterable[float]) -> bytes:
    """The packed little-endian float32 bytes of ``values``."""
    floats = list(values)
    return struct.pack(f"<{len(floats)}f", *floats)


def unpack(data: bytes) -> list[float]:
    """The float32 values packed in ``data``; ValueError if it is not a whole number of them."""
    if len(data) % FLOAT32_BYTES:
        raise ValueError(f"{len(data)} bytes is not a whole number of float32 values")
    return list(struct.unpack(f"<{len(data) // FLOAT32_BYTES}f", data))


def unpack_rows(data: bytes, dim: int) -> list[list[float]]:
    """``data`` as rows of ``dim`` values (row-major); ValueError if it does not split into whole rows."""
    if dim <= 0 or len(data) % (dim * FLOAT32_BYTES):
        raise ValueError(f"{len(data)} bytes do not split into rows of {dim} float32 values")
    values = unpack(data)
    return [values[i : i + dim] for i in range(0, len(values), dim)]
