"""Readiness: whether every backend the gateway needs answers, for /readyz.

statuses = await check_backends(clients)   # {"embedding-store": "SERVING", ..., "redis": "PONG"}
all_ready(statuses)                         # True when each one said so; not_ready(statuses): the others
"""

from __future__ import annotations

import asyncio

from gateway.clients import Clients

READY = ("SERVING", "PONG")  # what grpc.health.v1 and Redis' PING answer when all is well


async def check_backends(clients: Clients, timeout_s: float = 0.5) -> dict[str, str]:
    """What each backend says: "SERVING" for the three services and "PONG" for Redis, else why not."""
    statuses, redis = await asyncio.gather(clients.health.check(timeout_s), clients.events.ping(timeout_s))
    return {**statuses, "redis": redis}


def all_ready(statuses: dict[str, str]) -> bool:
    return all(s in READY for s in statuses.values())


def not_ready(statuses: dict[str, str]) -> dict[str, str]:
    """The backends that are not ready, with what they said."""
    return {name: s for name, s in statuses.items() if s not in READY}
