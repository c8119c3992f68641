"""Following Redis' published version pointer: the version ``recmesh publish`` set becomes the current one.

    await sync_published_version(store, versions)                 # once, at start-up
    task = asyncio.create_task(follow_published_version(store, versions))   # then every second; cancel to stop

The embedding store follows the same pointer, so the gateway pins what the services serve. A Redis blip keeps
the last value. A Redis that answers but has no pointer (it lost its data) is re-seeded from the pointer file
publish keeps next to the bundles (``<models dir>/PUBLISHED``, :func:`recmesh.publish.published_on_disk`), with
SET NX so a publish running meanwhile wins: the services go back to the published version, not to the newest
bundle on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.event_store import EventStore, EventStoreUnavailable
from gateway.model_versions import ModelVersions
from recmesh.publish import published_on_disk

log = logging.getLogger(__name__)


async def sync_published_version(store: EventStore, versions: ModelVersions) -> None:
    """Read the pointer once and tell ``versions``; a Redis that does not answer changes nothing, one without a
    pointer is re-seeded from the pointer file (when there is one)."""
    with contextlib.suppress(EventStoreUnavailable):
        version = await store.published_version()
        if version is None:
            version = published_on_disk(versions.models_dir)
            if version is not None and await store.seed_published_version(version):
                log.warning(
                    "version pointer missing in redis: re-seeded from the pointer file", extra={"version": version}
                )
        versions.set_published(version)


async def follow_published_version(store: EventStore, versions: ModelVersions, every_s: float = 1.0) -> None:
    """Keep ``versions`` on the published pointer (run as a task; cancel to stop)."""
    while True:
        await sync_published_version(store, versions)
        await asyncio.sleep(every_s)
