"""Which variant a visitor (or a session) sees: a hash, no state, the same on every replica and after restarts.

    bucket = blake2b("{experiment}:{unit id}", 8 bytes) as a big-endian integer, mod 10,000
    variant = the first whose cumulative share in basis points (share x 100) exceeds the bucket

So a visitor keeps their variant as long as the experiment's name and its variants' order and shares stay (see
recmesh.experiments.config for which edits move whom). About 1 µs per call (bench/assign_bench.py).

Usage::

    unit = unit_id(experiment.unit, user_id="u1", session_id="s9")   # "u1"; "" = nobody to assign
    variant = assign_variant(experiment, unit)                        # a Variant of the experiment
"""

from __future__ import annotations

from bisect import bisect_right
from hashlib import blake2b

from recmesh.experiments.config import BASIS_POINTS, ExperimentConfig, Variant


def bucket(experiment: str, unit_id: str) -> int:
    """0..9,999, uniform over unit ids and independent between experiments (the name is hashed in)."""
    digest = blake2b(f"{experiment}:{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BASIS_POINTS


def variant_index(bounds: tuple[int, ...], bucket_: int) -> int:
    """The first variant whose cumulative bound exceeds the bucket (bounds end at 10,000)."""
    return bisect_right(bounds, bucket_)


def unit_id(unit: str, user_id: str, session_id: str) -> str:
    """The id an experiment assigns by: ``visitor`` = the user id, else the session id; ``session`` = the
    session id. Empty when the request has none (then it is in no experiment)."""
    if unit == "visitor":
        return user_id or session_id
    return session_id


def assign_variant(experiment: ExperimentConfig, unit: str) -> Variant:
    """The variant of ``experiment`` the unit id ``unit`` belongs to."""
    return experiment.variants[variant_index(experiment.bounds, bucket(experiment.name, unit))]
