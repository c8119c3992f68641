"""One recommendation's hops to the stage services: each within the request's budget, timed, and degraded
instead of failed when the service is down, late, lacks the version the gateway pinned, or answers with another
version (a service bug: one answer never mixes versions).

    plan = Plan(budget, caller_version="")
    found = await plan.run(CANDIDATES_HOP, lambda timeout_s: client.retrieve(..., timeout_s=timeout_s))
    if found is None:               # no time left, or the service could not help: plan.degradations says why
        ...                         # the hop's fallback (here: popular items)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.budget import Budget
from gateway.clients import CANDIDATE_GENERATION, EMBEDDING_STORE, RANKING
from gateway.stage_client import UpstreamDeadline, UpstreamError
from serving.errors import NotFound
from serving.metrics import DEGRADED

log = logging.getLogger(__name__)


class Versioned(Protocol):
    """A hop's answer: it names the model version the service used."""

    @property
    def model_version(self) -> str: ...


T = TypeVar("T", bound=Versioned)


@dataclass(frozen=True)
class Hop:
    stage: str  # its name in timings and degradations
    service: str  # the stage service it calls
    fallback: str  # what the answer does without it


EMBEDDINGS_HOP = Hop("embeddings", EMBEDDING_STORE, "query built by candidate-generation")
CANDIDATES_HOP = Hop("candidates", CANDIDATE_GENERATION, "popular items served")
RANKING_HOP = Hop("ranking", RANKING, "retrieval order served")


@dataclass(frozen=True)
class Degradation:
    stage: str
    reason: str


class Plan:
    """The state of one recommendation while its hops run: its budget, the model version pinned so far (the
    caller's, until a hop answers with the one it used), what degraded and the session ids no model knows."""

    def __init__(self, budget: Budget, caller_version: str) -> None:
        self.budget = budget
        self.caller_version = caller_version
        self.version = caller_version
        self.degradations: list[Degradation] = []
        self.unknown: list[str] = []

    def degrade(self, stage: str, kind: str, consequence: str, code: str = "") -> None:
        reason = f"{kind} ({code}): {consequence}" if code else f"{kind}: {consequence}"
        self.degradations.append(Degradation(stage, reason))
        DEGRADED.labels("gateway", kind).inc()  # component, reason
        log.debug("degraded", extra={"stage": stage, "reason": reason})  # counted in recmesh_degradations_total

    async def run(self, hop: Hop, call: Callable[[float], Awaitable[T]]) -> T | None:
        """``call(timeout_s)`` with what is left of the budget, timed as the hop's stage. None, and the plan
        degraded, when no time is left, the service failed or was late, it lacks the version the gateway pinned,
        or it answered with a version other than the pinned one (a failed hop: its answer is not used); a version
        the caller asked for and a service does not have is the caller's mistake (NotFound)."""
        if self.budget.exhausted:
            self.degrade(hop.stage, "budget exhausted", hop.fallback)
            return None
        with self.budget.stage(hop.stage):
            try:
                found = await call(self.budget.remaining_s())
            except (UpstreamError, UpstreamDeadline) as e:
                self.degrade(hop.stage, f"{hop.service} unavailable", hop.fallback, e.code)
                return None
            except NotFound as e:
                if self.caller_version:
                    raise
                self.degrade(hop.stage, f"{hop.service} unavailable", f"{e.message}; {hop.fallback}")
                return None
        if self.version and found.model_version != self.version:
            log.warning(
                "%s answered with model version %r, not the pinned %r", hop.service, found.model_version, self.version
            )
            consequence = f"answered {found.model_version!r}, pinned {self.version!r}; {hop.fallback}"
            self.degrade(hop.stage, f"{hop.service} version mismatch", consequence)
            return None
        return found
