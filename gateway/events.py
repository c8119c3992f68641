"""What a visitor's event is, when it is valid, and what each event type weighs in the session vector.

    event = validate(Event("u1", "item42", "click"), received_ms=now_ms())   # defaults filled in, or InvalidArgument
    parse_weights("view=1,click=1.5")                                        # every type's weight

The event types, their default weights and the timestamp window come from :mod:`serving.limits`; storing events
is :mod:`gateway.event_store`'s job, recording a call's events :mod:`gateway.recording`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway import checks
from serving import limits
from serving.errors import InvalidArgument

# The timestamp window of limits, as messages and the REST schema say it.
EARLIEST_DATE = datetime.fromtimestamp(limits.MIN_TIMESTAMP_MS / 1000, UTC).date().isoformat()
MAX_FUTURE_HOURS = limits.MAX_FUTURE_MS / 3_600_000


@dataclass(frozen=True)
class Event:
    """One interaction. ``type`` is one of limits.EVENT_TYPES; ``timestamp_ms`` is milliseconds since the epoch."""

    user_id: str
    item_id: str
    type: str = "view"
    timestamp_ms: int = 0
    session_id: str = ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_weights(spec: str | Mapping[str, float]) -> dict[str, float]:
    """``"view=1,click=1.5"`` (or a mapping) -> every event type's weight, the ones not named keeping their
    default. ValueError for an unknown type or a weight that is not a finite number > 0."""
    pairs: dict[str, object]
    if isinstance(spec, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"expected type=weight, got {part!r}")
            pairs[name.strip()] = value.strip()
    else:
        pairs = dict(spec)
    weights = dict(limits.DEFAULT_EVENT_WEIGHTS)
    for name, given in pairs.items():
        if name not in limits.EVENT_TYPES:
            raise ValueError(f"unknown event type {name!r}; expected one of {', '.join(limits.EVENT_TYPES)}")
        try:
            weight = float(given)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"weight of {name} must be a number, got {given!r}") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight of {name} must be a finite number > 0, got {given!r}")
        weights[name] = weight
    return weights


def _check_id(name: str, value: str, required: bool) -> None:
    checks.identifier(f"event {name}", value, required=required, field=name)
    # Ids are stored and exported as sent: stray spaces or control characters would make two ids of one visitor.
    if value != value.strip():
        raise InvalidArgument(f"event {name} {value!r} has leading or trailing whitespace", field=name)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"event {name} {value!r} contains control characters", field=name)


def _check_timestamp(ts: int, received_ms: int) -> None:
    if ts < 0:
        raise InvalidArgument(f"event timestamp_ms must be >= 0 (0 = now), got {ts}", field="timestamp_ms")
    if ts < limits.MIN_TIMESTAMP_MS:
        hint = " (seconds, not milliseconds?)" if ts >= limits.MIN_TIMESTAMP_MS // 1000 else ""
        raise InvalidArgument(
            f"event timestamp_ms {ts} is before {EARLIEST_DATE}{hint}; send milliseconds since the epoch, or 0 for now",
            field="timestamp_ms",
        )
    if ts > received_ms + limits.MAX_FUTURE_MS:
        raise InvalidArgument(
            f"event timestamp_ms {ts} is more than {MAX_FUTURE_HOURS:g} hours in the future "
            f"(server time {received_ms})",
            field="timestamp_ms",
        )


def validate(event: Event, received_ms: int | None = None) -> Event:
    """The event with defaults filled in (type view, timestamp = received time); InvalidArgument if it is bad."""
    received_ms = now_ms() if received_ms is None else received_ms
    _check_id("user_id", event.user_id, required=True)
    _check_id("item_id", event.item_id, required=True)
    _check_id("session_id", event.session_id, required=False)
    kind = event.type or "view"
    if kind not in limits.EVENT_TYPES:
        raise InvalidArgument(
            f"event type must be one of {', '.join(limits.EVENT_TYPES)}, got {event.type!r}", field="type"
        )
    ts = event.timestamp_ms or received_ms
    _check_timestamp(ts, received_ms)
    return Event(event.user_id, event.item_id, kind, ts, event.session_id)
