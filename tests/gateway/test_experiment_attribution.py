"""Attribution of events to A/B experiments, against a real Redis: an event whose session_id is an experiment's
recommendation id counts for its variant once it is stored (a retried one counts once), other events count
nothing, and the gateway's impression counters reach Redis in one flush."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from devtools.stack import free_port
from gateway.event_store import EventStore, RateLimited
from gateway.events import Event, now_ms
from gateway.experiment_counts import ExperimentCounts, ExperimentMetrics, attribution_within
from gateway.model_versions import ModelVersions
from gateway.recording import EventRecorder
from recmesh.experiments.attribution import new_recommendation_id
from recmesh.experiments.config import parse_config
from recmesh.redis_layout import events_key, experiment_counts_key
from serving import limits

session_loop = pytest.mark.asyncio(loop_scope="session")
DB = 11  # a database of its own


@pytest_asyncio.fixture(loop_scope="session")
async def redis_url(redis_server) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    yield url
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


def new_experiment() -> str:
    return f"exp-{uuid.uuid4().hex[:12]}"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def counts_of(url: str, experiment: str) -> dict[str, int]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        raw = await client.hgetall(experiment_counts_key(experiment))
    finally:
        await client.aclose()
    return {str(field): int(value) for field, value in raw.items()}


@session_loop
async def test_attributed_events_count_per_variant_and_type_once_stored(redis_url: str) -> None:
    registry = CollectorRegistry()
    store = EventStore.from_url(redis_url, timeout_ms=500, experiment_metrics=ExperimentMetrics(registry))
    experiment, other = new_experiment(), new_experiment()
    control, treated = new_recommendation_id(experiment, "control"), new_recommendation_id(experiment, "no-ranking")
    elsewhere = new_recommendation_id(other, "a")
    ts = now_ms()
    batch = [  # two visitors, two experiments, equal events within the call (both stored, both counted)
        Event("u1", "i1", "view", ts, control),
        Event("u1", "i1", "click", ts + 1, control),
        Event("u1", "i1", "click", ts + 1, control),
        Event("u2", "i2", "click", ts, treated),
        Event("u2", "i3", "purchase", ts + 2, treated),
        Event("u2", "i4", "view", ts + 3, elsewhere),
        Event("u2", "i5", "view", ts + 4, "a-plain-session"),
    ]
    try:
        assert await store.record(batch) == 7
        assert await counts_of(redis_url, experiment) == {
            "control:view": 1,
            "control:click": 2,
            "no-ranking:click": 1,
            "no-ranking:purchase": 1,
        }
        assert await counts_of(redis_url, other) == {"a:view": 1}
        metric = "recmesh_experiment_events_total"
        assert sample(registry, metric, experiment=experiment, variant="control", type="click") == 2
        assert sample(registry, metric, experiment=experiment, variant="no-ranking", type="purchase") == 1
        assert sample(registry, metric, experiment=other, variant="a", type="view") == 1
        assert await store.redis.llen(events_key("u2")) == 4  # the events themselves are stored as before
    finally:
        await store.close()


@session_loop
async def test_a_retried_identical_batch_counts_once(redis_url: str) -> None:
    registry = CollectorRegistry()
    store = EventStore.from_url(redis_url, timeout_ms=500, experiment_metrics=ExperimentMetrics(registry))
    experiment = new_experiment()
    rid = new_recommendation_id(experiment, "control")
    ts = now_ms()
    batch = [Event("u3", f"i{n}", "click", ts + n, rid) for n in range(5)]
    try:
        assert await store.record(batch) == 5
        for _ in range(3):  # the caller did not hear back and retries: nothing new is stored or counted
            assert await store.record(batch) == 0
        assert await counts_of(redis_url, experiment) == {"control:click": 5}
        labels = {"experiment": experiment, "variant": "control", "type": "click"}
        assert sample(registry, "recmesh_experiment_events_total", **labels) == 5
        # Half of a retried batch new (a later timestamp): only the new half counts.
        mixed = batch[:2] + [Event("u3", "i9", "click", ts + 9, rid)]
        assert await store.record(mixed) == 1
        assert await counts_of(redis_url, experiment) == {"control:click": 6}
        assert sample(registry, "recmesh_experiment_events_total", **labels) == 6
    finally:
        await store.close()


@session_loop
async def test_events_without_an_experiment_id_count_nothing(redis_url: str) -> None:
    registry = CollectorRegistry()
    store = EventStore.from_url(redis_url, timeout_ms=500, experiment_metrics=ExperimentMetrics(registry))
    experiment = new_experiment()
    ts = now_ms()
    not_ids = [
        "",  # no session id
        uuid.uuid4().hex,  # a recommendation outside any experiment
        f"{uuid.uuid4().hex}.{experiment}",  # no variant
        f"{uuid.uuid4().hex}.{experiment}.Control",  # not a valid name
        f"not-hex.{experiment}.control",
        f"{uuid.uuid4().hex}.{experiment}.control.extra",
    ]
    try:
        assert await store.record([Event("u4", "i1", "click", ts + n, s) for n, s in enumerate(not_ids)]) == 6
        client = aioredis.Redis.from_url(redis_url)
        try:
            assert await client.exists(experiment_counts_key(experiment)) == 0
        finally:
            await client.aclose()
        assert not [m for m in registry.collect() if m.name == "recmesh_experiment_events" and m.samples]
    finally:
        await store.close()


@session_loop
async def test_the_gateway_can_attribute_only_what_its_config_names(redis_url: str) -> None:
    configured, unknown = new_experiment(), new_experiment()
    document = {
        "version": 1,
        "experiments": [
            {
                "name": configured,
                "status": "stopped",  # stopped: the events of answers it served still count
                "unit": "visitor",
                "variants": [{"name": "a", "share": 50, "options": {}}, {"name": "b", "share": 50, "options": {}}],
                "started_at": "2026-12-01T20:00:00Z",
                "stopped_at": "2026-12-01T21:00:00Z",
            }
        ],
    }
    config = parse_config(json.dumps(document))
    store = EventStore.from_url(
        redis_url,
        timeout_ms=500,
        attribute=attribution_within(lambda: config),
        experiment_metrics=ExperimentMetrics(CollectorRegistry()),
    )
    ts = now_ms()
    try:
        await store.record(
            [
                Event("u5", "i1", "click", ts, new_recommendation_id(configured, "b")),
                Event("u5", "i2", "click", ts, new_recommendation_id(configured, "c")),  # no such variant
                Event("u5", "i3", "click", ts, new_recommendation_id(unknown, "b")),  # no such experiment
            ]
        )
        assert await counts_of(redis_url, configured) == {"b:click": 1}
        assert await counts_of(redis_url, unknown) == {}
    finally:
        await store.close()


@session_loop
async def test_a_rate_limited_call_stores_and_counts_nothing(redis_url: str) -> None:
    store = EventStore.from_url(
        redis_url, timeout_ms=500, rate_limit=3, experiment_metrics=ExperimentMetrics(CollectorRegistry())
    )
    experiment = new_experiment()
    rid = new_recommendation_id(experiment, "control")
    ts = now_ms()
    try:
        with pytest.raises(RateLimited):
            await store.record([Event("u6", f"i{n}", "view", ts + n, rid) for n in range(4)])
        assert await counts_of(redis_url, experiment) == {}
    finally:
        await store.close()


@session_loop
async def test_events_recorded_through_the_recorder_are_attributed(redis_url: str, tmp_path: Path) -> None:
    store = EventStore.from_url(redis_url, timeout_ms=500, experiment_metrics=ExperimentMetrics(CollectorRegistry()))
    recorder = EventRecorder(store, ModelVersions(tmp_path), default_budget_ms=2000)  # no bundle: every item known
    experiment = new_experiment()
    sent = {"control": 7, "treated": 4}
    ts = now_ms()
    events = [
        Event(f"visitor-{variant}-{n}", f"item{n}", "click", ts, new_recommendation_id(experiment, variant))
        for variant, count in sent.items()
        for n in range(count)
    ]
    try:
        recorded = await recorder.record(events, max_events=limits.MAX_EVENTS_PER_CALL, unit="call")
        assert recorded.stored == 11
        assert await recorder.record(events, max_events=limits.MAX_EVENTS_PER_CALL, unit="call")  # a retry
        assert await counts_of(redis_url, experiment) == {f"{v}:click": n for v, n in sent.items()}
    finally:
        await store.close()


@session_loop
async def test_impressions_are_flushed_in_one_write_and_counted_in_prometheus(redis_url: str) -> None:
    registry = CollectorRegistry()
    client = aioredis.Redis.from_url(redis_url)
    counts = ExperimentCounts(client, metrics=ExperimentMetrics(registry))
    experiment = new_experiment()
    try:
        for _ in range(30):
            counts.count_impression(experiment, "control")
        for _ in range(12):
            counts.count_impression(experiment, "no-ranking")
        assert counts.pending == 42
        assert await counts_of(redis_url, experiment) == {}  # nothing written before a flush
        assert await counts.flush() == 42
        assert counts.pending == 0
        assert await counts.flush() == 0  # nothing pending, nothing written
        counts.count_impression(experiment, "control")
        assert await counts.flush() == 1
        assert await counts_of(redis_url, experiment) == {"control:impressions": 31, "no-ranking:impressions": 12}
        labels = {"experiment": experiment, "variant": "control"}
        assert sample(registry, "recmesh_experiment_impressions_total", **labels) == 31
    finally:
        await client.aclose()


@session_loop
async def test_impressions_wait_for_a_redis_that_is_down_and_run_flushes_on_cancel(redis_url: str) -> None:
    down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    counts = ExperimentCounts(down, metrics=ExperimentMetrics(CollectorRegistry()), every_s=0.05)
    experiment = new_experiment()
    counts.count_impression(experiment, "control")
    assert await counts.flush() == 0
    assert counts.pending == 1  # kept for the next flush
    up = aioredis.Redis.from_url(redis_url)
    try:
        counts.redis = up  # Redis is back
        task = asyncio.create_task(counts.run())
        await asyncio.sleep(0.2)  # a few periodic flushes
        assert await counts_of(redis_url, experiment) == {"control:impressions": 1}
        counts.count_impression(experiment, "control")  # counted just before shutdown
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await counts_of(redis_url, experiment) == {"control:impressions": 2}
    finally:
        await up.aclose()
        await down.aclose()
