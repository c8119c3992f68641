"""Recording a call's events: validate them all, store them all or none, say which items no model knows yet.

recorder = EventRecorder(store, versions, default_budget_ms=200)
recorded = await recorder.record(events, max_events=limits.MAX_EVENTS_PER_CALL, unit="call")
recorded.stored, recorded.known, recorded.unknown_item_ids, recorded.timings
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway import checks
from gateway.budget import Budget
from gateway.event_store import EventStore
from gateway.events import Event, now_ms, validate
from gateway.model_versions import ModelVersions
from serving.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class RecordedEvents:
    stored: int
    known: list[bool]  # per event, in request order
    unknown_item_ids: list[str]  # distinct, first occurrence order
    timings: dict[str, float]


@dataclass(frozen=True)
class EventRecorder:
    """RecordEvent(s) and POST /v1/events: one visitor's (or many visitors') events into the event store."""

    store: EventStore
    versions: ModelVersions
    default_budget_ms: int

    async def record(
        self, events: Sequence[Event], *, max_events: int, unit: str, caller_deadline_s: float | None = None
    ) -> RecordedEvents:
        """Validate every event (one bad event stores nothing), store them all or none in one round trip
        (RateLimited, nothing stored, when a visitor is over the per-second limit), and report which items the
        current model does not know (stored all the same: they count once a model knows them). At most
        ``max_events`` per ``unit`` ("call", "stream")."""
        checks.event_count(events, max_events, unit)
        received_ms = now_ms()
        checked = [self._validated(event, i, len(events), received_ms) for i, event in enumerate(events)]
        budget = Budget.within(self.default_budget_ms, caller_deadline_s)
        with budget.stage("events"):
            await self.store.record(checked)
        known = await self.versions.known([e.item_id for e in checked])
        unknown = list(dict.fromkeys(e.item_id for e, ok in zip(checked, known, strict=True) if not ok))
        return RecordedEvents(len(checked), known, unknown, budget.finish())

    @staticmethod
    def _validated(event: Event, index: int, count: int, received_ms: int) -> Event:
        try:
            return validate(event, received_ms)
        except InvalidArgument as e:
            where = "" if count == 1 else f"events[{index}]: "
            prefix = "" if count == 1 else f"events[{index}]."  # the field's path in a batch
            violations = [FieldViolation(prefix + v.field, v.description) for v in e.violations]
            raise InvalidArgument(f"{where}{e.message}; nothing was stored", violations=violations) from e
