"""The gateway's checks of a caller's input: every range, cap and id length of the public API, in one place.

Both faces reach them through the use cases (REST's pydantic schemas check only types and shape; gRPC's adapter
only turns proto3's 0 into "the default"), so a value out of range gets the same INVALID_ARGUMENT message over
REST and gRPC, and is checked once along its path. The numbers come from :mod:`serving.limits`.

``name`` is the field's path as the API names it (``k``, ``options.budget_ms``); each error names it as its field
violation too (google.rpc.BadRequest: the ``grpc-status-details-bin`` trailer, the REST error's ``details``).

    checks.in_range("k", k, 1, limits.MAX_K)      # InvalidArgument("k must be between 1 and 200, got 500", field="k")
    checks.ids("exclude_item_ids", exclude)       # each non-empty and at most MAX_ID_LEN characters
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from serving import limits, vectors
from serving.errors import InvalidArgument


def in_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}", field=name)


def optional_in_range(name: str, value: int | None, low: int, high: int) -> None:
    """None is the default, and always fine."""
    if value is not None:
        in_range(name, value, low, high)


def count(name: str, items: Sequence[object], cap: int, *, required: bool = False) -> None:
    """At most ``cap`` items (and at least one when required)."""
    if required and not items:
        raise InvalidArgument(f"{name} must not be empty", field=name)
    if len(items) > cap:
        raise InvalidArgument(f"at most {cap} {name}, got {len(items)}", field=name)


def identifier(name: str, value: str, *, required: bool = True, field: str = "") -> None:
    """Non-empty (when required) and at most MAX_ID_LEN characters; ``field``: its path when not ``name``."""
    if not value:
        if required:
            raise InvalidArgument(f"{name} must not be empty", field=field or name)
        return
    if len(value) > limits.MAX_ID_LEN:
        raise InvalidArgument(
            f"{name} is {len(value)} characters long, at most {limits.MAX_ID_LEN}", field=field or name
        )


def ids(name: str, items: Sequence[str]) -> None:
    for i, item in enumerate(items):
        identifier(f"{name}[{i}]", item)


def session(name: str, items: Sequence[str]) -> None:
    """A caller's session: at most MAX_SESSION_ITEMS ids (only the most recent MAX_SESSION are used), each valid."""
    count(name, items, limits.MAX_SESSION_ITEMS)
    ids(name, items)


def model_version(value: str) -> None:
    if len(value) > limits.MAX_VERSION_LEN:
        raise InvalidArgument(
            f"model_version is {len(value)} characters long, at most {limits.MAX_VERSION_LEN}", field="model_version"
        )


def query_vector_size(vector: np.ndarray | None, field: str = "query_vector") -> None:
    """The caller's vector is 1-D and no longer than any model's (its own model's dim is checked once known)."""
    if vector is None:
        return
    if vector.ndim != 1 or vector.size == 0:
        raise InvalidArgument(f"query_vector must be a non-empty list of floats, got shape {vector.shape}", field=field)
    if vector.size > limits.MAX_QUERY_DIM:
        raise InvalidArgument(f"query_vector has {vector.size} values, at most {limits.MAX_QUERY_DIM}", field=field)


def packed_query(vector: np.ndarray, dim: int, version: str, field: str = "query_vector") -> bytes:
    """The packed bytes of a query vector that fits model ``version`` (``dim`` values, all finite)."""
    if vector.size != dim:
        raise InvalidArgument(f"query_vector has {vector.size} dims, model {version} expects {dim}", field=field)
    if not np.isfinite(vector).all():
        raise InvalidArgument("query_vector contains NaN or infinite values", field=field)
    if not query_norm_fits(vector):
        raise InvalidArgument(QUERY_TOO_LARGE, field=field)
    return vectors.pack(vector)


QUERY_TOO_LARGE = "query_vector is too large: its squared norm overflows float32 (its scores would not be finite)"


def query_norm_fits(vector: np.ndarray) -> bool:
    """Whether every score of ``vector`` (a dot product with unit item vectors, at most its norm) is finite: its
    squared norm, summed in float64, is within float32's range. The stage service applies the same rule."""
    wide = vector.astype(np.float64)
    return float(np.dot(wide, wide)) <= limits.MAX_QUERY_SQUARED_NORM


def finite_scores(scores: Sequence[float]) -> None:
    """Each candidate's score (``candidates[i].score``) is a finite number, in float32's range (its wire type)."""
    bad = next((i for i, s in enumerate(scores) if not (math.isfinite(s) and abs(s) <= limits.MAX_SCORE)), None)
    if bad is not None:
        raise InvalidArgument(
            f"candidate scores must be finite numbers of at most {limits.MAX_SCORE:g} in magnitude",
            field=f"candidates[{bad}].score",
        )


def event_count(events: Sequence[object], cap: int, unit: str) -> None:
    """One to ``cap`` events per ``unit`` ("call", "stream"). No count in the message: a stream is not read past
    the first event over the cap."""
    if not events:
        raise InvalidArgument("no events to record", field="events")
    if len(events) > cap:
        raise InvalidArgument(f"at most {cap} events per {unit}; nothing was stored", field="events")
