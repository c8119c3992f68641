"""Readiness: whether this gateway process can answer, for /readyz; what each backend says, for the body.

Ready means "this process can answer": it is not draining and it has a model (a bundle it read the catalogue
of). A stage or Redis that is down makes answers degraded, not impossible, so it is reported in the body and
/readyz stays 200: otherwise one backend's outage would take every gateway pod out of its Service at once and
turn a degradation into an outage (docs/reliability.md, liveness and readiness per process).

    statuses = await check_backends(clients)   # {"embedding-store": "SERVING", ..., "redis": "PONG"}
    degraded(statuses)                          # the backends that are not well, with what they said
    ready, reason = can_answer(versions, draining=False)
"""

from __future__ import annotations

import asyncio

from gateway.clients import Clients
from gateway.model_versions import ModelVersions
from serving.errors import NotFound, Unavailable

READY = ("SERVING", "PONG")  # what grpc.health.v1 and Redis' PING answer when all is well


async def check_backends(clients: Clients, timeout_s: float = 0.5) -> dict[str, str]:
    """What each backend says: "SERVING" for the three services and "PONG" for Redis, else why not."""
    statuses, redis = await asyncio.gather(clients.health.check(timeout_s), clients.events.ping(timeout_s))
    return {**statuses, "redis": redis}


def degraded(statuses: dict[str, str]) -> dict[str, str]:
    """The backends that are not well, with what they said (answers are degraded while any is listed)."""
    return {name: s for name, s in statuses.items() if s not in READY}


def can_answer(versions: ModelVersions, draining: bool) -> tuple[bool, str]:
    """(ready, why not): not while draining, nor before a model's manifest can be read."""
    if draining:
        return False, "draining"
    try:
        versions.get()
    except (NotFound, Unavailable) as e:
        return False, f"no model: {e.message}"
    return True, ""
