"""Following Redis' published version pointer: the version ``recmesh publish`` set becomes the current one.

    await sync_published_version(store, versions)                 # once, at start-up
    task = asyncio.create_task(follow_published_version(store, versions))   # then every second; cancel to stop

The embedding store follows the same pointer, so the gateway pins what the services serve. A Redis blip keeps
the last value.
"""

from __future__ import annotations

import asyncio
import contextlib

from gateway.event_store import EventStore, EventStoreUnavailable
from gateway.model_versions import ModelVersions


async def sync_published_version(store: EventStore, versions: ModelVersions) -> None:
    """Read the pointer once and tell ``versions``; a Redis that does not answer changes nothing."""
    with contextlib.suppress(EventStoreUnavailable):
        versions.set_published(await store.published_version())


async def follow_published_version(store: EventStore, versions: ModelVersions, every_s: float = 1.0) -> None:
    """Keep ``versions`` on the published pointer (run as a task; cancel to stop)."""
    while True:
        await sync_published_version(store, versions)
        await asyncio.sleep(every_s)
