"""The packed float32 wire codec (serving.vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from recmesh.redis_layout import VECTOR_DTYPE
from serving import errors, vectors


def test_vectors_round_trip_zero_copy():
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    data = vectors.pack(matrix)
    assert len(data) == 3 * 4 * 4 == 3 * vectors.vector_bytes(4)
    rows = vectors.unpack(data, 4)
    assert rows.shape == (3, 4) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, matrix)
    assert not rows.flags.writeable  # a view on the bytes, not a copy
    assert data == np.asarray(matrix, dtype="<f4").tobytes()
    np.testing.assert_array_equal(vectors.unpack_vector(vectors.pack([1.0, 2.0]), 2), [1.0, 2.0])
    assert vectors.unpack(b"", 4).shape == (0, 4)


def test_the_wire_dtype_is_the_redis_layouts():
    assert vectors.WIRE_DTYPE == VECTOR_DTYPE == np.dtype("<f4")


def test_pack_rows_packs_each_row_on_its_own():
    matrix = np.arange(6, dtype=np.float32).reshape(3, 2)
    rows = vectors.pack_rows(matrix)
    assert rows == [vectors.pack(row) for row in matrix]
    assert b"".join(rows) == vectors.pack(matrix)


def test_scores_are_one_float32_each():
    np.testing.assert_array_equal(vectors.unpack_scores(vectors.pack([0.5, -1.0, 2.0])), [0.5, -1.0, 2.0])
    assert vectors.unpack_scores(b"").shape == (0,)
    with pytest.raises(errors.InvalidArgument, match="candidate_scores is 7 bytes, not a whole number"):
        vectors.unpack_scores(b"\x00" * 7, "candidate_scores")


def test_vectors_bad_length_is_invalid_argument():
    with pytest.raises(errors.InvalidArgument, match="not a multiple of 16"):
        vectors.unpack(b"\x00" * 20, 4)
    with pytest.raises(errors.InvalidArgument, match=r"vector is 16 bytes \(4 dims\), the model expects 2 dims"):
        vectors.unpack_vector(b"\x00" * 16, 2)
    with pytest.raises(errors.InvalidArgument, match=r"query_vector is 7 bytes \(not a whole number.*model v1 expects"):
        vectors.unpack_vector(b"\x00" * 7, 2, "query_vector", "model v1")


def test_item_rows_round_trip_as_little_endian_int32_and_are_checked_against_the_table():
    data = vectors.pack_item_rows(np.array([3, 0, 7]))
    assert data == np.array([3, 0, 7], "<i4").tobytes()
    rows = vectors.unpack_item_rows(data, n_items=8)
    assert rows.dtype == np.int64 and rows.tolist() == [3, 0, 7]
    assert vectors.unpack_item_rows(b"", n_items=0).size == 0
    with pytest.raises(errors.InvalidArgument, match=r"rows\[2\] = 7 is not a row of the model version's 7 items"):
        vectors.unpack_item_rows(data, n_items=7)
    with pytest.raises(errors.InvalidArgument, match="not a whole number of little-endian int32 rows"):
        vectors.unpack_item_rows(data[:5], n_items=8)
