"""Recommendation ids that carry their experiment and variant, so an event echoing one is attributed statelessly.

An answer served in an experiment gets the id ``{uuid4 hex}.{experiment}.{variant}``; a visitor's event that
echoes it as its ``session_id`` counts for that variant. Names are ``[a-z0-9_-]{1,32}`` (no dots), so the id
splits back unambiguously and nothing has to be remembered per recommendation.

Usage::

    rid = new_recommendation_id("ranker-test", "control")   # "3f2a...e9.ranker-test.control"
    parse_recommendation_id(rid)                            # ("ranker-test", "control")
    parse_recommendation_id("3f2a...e9")                    # None: a recommendation outside any experiment
    counts_field("control", "click")                        # "control:click", a field of the experiment's counts

An experiment's counts (``recmesh.redis_layout.experiment_counts_key``) are one hash: ``{variant}:impressions``
(answers served, counted by the gateway) and ``{variant}:{event type}`` (events attributed to the variant).
"""

from __future__ import annotations

import re
import uuid

NAME_PATTERN = r"[a-z0-9_-]{1,32}"  # experiment and variant names
_NAME = re.compile(NAME_PATTERN)
_RECOMMENDATION_ID = re.compile(rf"[0-9a-f]{{32}}\.({NAME_PATTERN})\.({NAME_PATTERN})")
MAX_RECOMMENDATION_ID_LENGTH = 32 + 1 + 32 + 1 + 32  # fits an event's session_id (at most 256 characters)
IMPRESSIONS = "impressions"  # the counts field kind of answers served; the others are event types


def is_valid_name(name: str) -> bool:
    """Whether ``name`` may name an experiment or a variant."""
    return _NAME.fullmatch(name) is not None


def new_recommendation_id(experiment: str, variant: str) -> str:
    """A fresh recommendation id naming ``experiment`` and ``variant``; ValueError for an invalid name."""
    for what, name in (("experiment", experiment), ("variant", variant)):
        if not is_valid_name(name):
            raise ValueError(f"{what} name {name!r} is not valid: expected 1 to 32 of a-z, 0-9, '_' and '-'")
    return f"{uuid.uuid4().hex}.{experiment}.{variant}"


def parse_recommendation_id(text: str) -> tuple[str, str] | None:
    """(experiment, variant) of a recommendation id made by :func:`new_recommendation_id`; None for anything else
    (a plain session id, a recommendation outside any experiment, a malformed id)."""
    if "." not in text or len(text) > MAX_RECOMMENDATION_ID_LENGTH:  # the common case, cheaply
        return None
    match = _RECOMMENDATION_ID.fullmatch(text)
    return (match[1], match[2]) if match else None


def counts_field(variant: str, kind: str) -> str:
    """The field of an experiment's counts hash: ``kind`` is IMPRESSIONS or an event type."""
    return f"{variant}:{kind}"


def split_counts_field(field: str) -> tuple[str, str] | None:
    """(variant, kind) of a counts field; None for a field not written by recmesh."""
    variant, sep, kind = field.partition(":")
    return (variant, kind) if sep and kind and is_valid_name(variant) else None
