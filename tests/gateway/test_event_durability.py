"""What a write to the event store promises when Redis misbehaves: a write Redis did not acknowledge in time is a
503 with Retry-After, a retry stores the event at most once, a full store refuses (503) rather than evicts, and a
version pointer Redis lost comes back from the pointer file publish keeps next to the bundles."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.event_store import EventStore
from gateway.model_versions import ModelVersions
from gateway.version_pointer import sync_published_version
from recmesh.publish import POINTER_FILE, publish, published_on_disk
from recmesh.redis_layout import POINTER_KEY, events_key
from tests.gateway.harness import Gateway, new_user

session_loop = pytest.mark.asyncio(loop_scope="session")


@session_loop
async def test_a_write_paused_past_its_timeout_is_a_503_and_a_retry_stores_it_once(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    user, item = new_user(), model.item_ids[0]
    event = {"user_id": user, "item_id": item, "type": "click", "timestamp_ms": 1_700_000_000_000}
    redis = aioredis.Redis.from_url(gateway.redis_url)
    try:
        await redis.execute_command("CLIENT", "PAUSE", 1500, "WRITE")  # the write waits 1 s, then gives up
        failed = await gateway.record(event)
        assert failed.status_code == 503, failed.text
        assert failed.headers["retry-after"] == "1"
        await asyncio.sleep(0.8)  # the pause is over: the first write may or may not have been applied
        for _ in range(2):  # the caller retries (twice, to be sure a retry is never stored again)
            retried = await gateway.record(event)
            assert retried.status_code == 200, retried.text
        assert await redis.llen(events_key(user)) == 1
        # An equal event in a new call is the same event; a different timestamp is a new one.
        assert (await gateway.record({**event, "timestamp_ms": event["timestamp_ms"] + 1})).status_code == 200
        assert await redis.llen(events_key(user)) == 2
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        await redis.aclose()


@session_loop
async def test_equal_events_within_one_call_are_all_stored(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    user = new_user()
    same = {"user_id": user, "item_id": model.item_ids[1], "timestamp_ms": 1_700_000_000_000}
    assert (await gateway.record(same, same)).json()["stored"] == 2
    redis = aioredis.Redis.from_url(gateway.redis_url)
    try:
        assert await redis.llen(events_key(user)) == 2
    finally:
        await redis.aclose()


@session_loop
async def test_a_full_store_refuses_the_write_with_a_503(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    redis = aioredis.Redis.from_url(gateway.redis_url)
    before = await redis.config_get("maxmemory*")
    try:
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", 1)  # every write is over the limit
        refused = await gateway.record({"user_id": new_user(), "item_id": model.item_ids[0]})
        assert refused.status_code == 503 and "maxmemory" in refused.text
    finally:
        await redis.config_set("maxmemory", before["maxmemory"])
        await redis.config_set("maxmemory-policy", before["maxmemory-policy"])
        await redis.aclose()


@session_loop
async def test_a_pointer_redis_lost_is_reseeded_from_the_pointer_file(
    bundle_path: Path,
    redis_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundle_path, models / bundle_path.name)
    newer = models / "99990101T000000Z"  # a newer bundle on disk that was never published
    newer.mkdir()
    shutil.copy(bundle_path / "manifest.json", newer / "manifest.json")
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    version = await asyncio.to_thread(publish, models / bundle_path.name, url, progress=False)
    assert published_on_disk(models) == version and (models / POINTER_FILE).is_file()
    store = EventStore.from_url(url, timeout_ms=500)
    versions = ModelVersions(models)
    try:
        await store.redis.delete(POINTER_KEY)  # Redis lost its data
        await sync_published_version(store, versions)
        assert await store.published_version() == version  # re-seeded
        assert versions.current_version() == version  # not the newest on disk
    finally:
        await store.redis.flushdb()
        await store.close()
    unreachable = ModelVersions(models)  # Redis down since start-up: the file decides, not the newest bundle
    assert unreachable.current_version() == version
