"""Real-time events: what a visitor just did shows in their very next recommendation (read-your-writes), each
event type weighs what it should, and the stored history is bounded. Served answers are compared with the
offline pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest

from gateway.events import now_ms, parse_weights
from recmesh.pipeline import Model, session_query
from recmesh.v1 import common_pb2, recommendation_service_pb2
from tests.gateway.harness import (
    SLOW_MACHINE_BUDGET_MS,
    Gateway,
    farthest_from,
    ids,
    neighbours,
    new_user,
    offline,
    reference,
    running_gateway,
)

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2
OPTIONS = pb.RecommendOptions(budget_ms=SLOW_MACHINE_BUDGET_MS)


@session_loop
async def test_an_event_posted_over_rest_shows_in_the_next_recommendation(gateway: Gateway, model: Model) -> None:
    user, first = new_user(), model.item_ids[42]
    assert (await gateway.record({"user_id": user, "item_id": first})).status_code == 200
    before = ids(await gateway.recommend(user_id=user))
    assert before == offline(model, [first])
    jump = farthest_from(model, first)
    recorded = await gateway.record({"user_id": user, "item_id": jump, "type": "view"})
    assert recorded.json() == {"stored": True, "known_item": True}
    after = ids(await gateway.recommend(user_id=user))  # no sleep: the event is stored before the call returns
    assert jump not in after and first not in after
    assert after == offline(model, [first, jump])
    near = neighbours(model, jump)
    assert len(near & set(after)) > len(near & set(before))  # the new item's neighbours moved up


async def grpc_recommend(gateway: Gateway, user: str) -> list[str]:
    reply = await gateway.stub.Recommend(pb.RecommendRequest(user_id=user, k=10, options=OPTIONS), timeout=5)
    assert not reply.degraded, reply.degradations
    return [i.item_id for i in reply.items]


@session_loop
async def test_an_event_recorded_over_grpc_shows_in_the_next_recommendation(gateway: Gateway, model: Model) -> None:
    user, first = new_user(), model.item_ids[7]
    await gateway.stub.RecordEvent(
        pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=first)), timeout=5
    )
    before = await grpc_recommend(gateway, user)
    jump = farthest_from(model, first)
    reply = await gateway.stub.RecordEvent(
        pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=jump, type=common_pb2.EVENT_TYPE_VIEW)),
        timeout=5,
    )
    assert reply.stored and reply.known_item
    after = await grpc_recommend(gateway, user)  # no sleep: stored before RecordEvent answered
    assert jump not in after and after == offline(model, [first, jump])
    assert after != before
    # A client stream, then the next recommendation.
    more = [model.item_ids[i] for i in (11, 12)]
    stream = [pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=i)) for i in more]
    assert (await gateway.stub.RecordEvents(iter(stream), timeout=5)).stored == 2
    assert await grpc_recommend(gateway, user) == offline(model, [first, jump, *more])


@session_loop
async def test_event_types_weigh_into_the_session_vector(gateway: Gateway, model: Model) -> None:
    a, b = model.item_ids[42], farthest_from(model, model.item_ids[42])
    viewed, bought = new_user(), new_user()
    start = now_ms() - 10_000
    await gateway.record({"user_id": viewed, "item_id": a, "timestamp_ms": start}, {"user_id": viewed, "item_id": b})
    await gateway.record(
        {"user_id": bought, "item_id": a, "type": "purchase", "timestamp_ms": start},
        {"user_id": bought, "item_id": b, "type": "view"},
    )
    # ANN alone: the query vector is what the weights change (the default recipe's covisit source reads no weights)
    n = int(model.manifest["params"]["candidates"])
    as_views = ids(await gateway.recommend(user_id=viewed, k=20, options={"candidate_count": n}))
    with_purchase = ids(await gateway.recommend(user_id=bought, k=20, options={"candidate_count": n}))
    assert as_views == offline(model, [a, b], k=20, n=n)  # all views: the offline query, bit for bit
    assert with_purchase == offline(model, [a, b], [3.0, 1.0], k=20, n=n)  # purchase = 3 x a view (the default)
    assert with_purchase != as_views
    rows = np.array([model.index_of[a], model.index_of[b]])
    vectors = model.space.vectors[rows]
    weighted = session_query(vectors, model.query_decay, np.array([3.0, 1.0]))
    assert weighted @ vectors[0] > model.query(rows) @ vectors[0]  # the purchase pulls the query towards its item


@session_loop
async def test_configured_weights_and_a_request_with_both_user_and_session(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model: Model
) -> None:  # type: ignore[no-untyped-def]
    weights = parse_weights("view=1,click=4")
    async with running_gateway(models_dir, redis_server.url, stage_ports, event_weights=weights) as custom:
        user, clicked, extra = new_user(), model.item_ids[5], model.item_ids[9]
        await custom.record({"user_id": user, "item_id": clicked, "type": "click"})
        body = await custom.recommend(user_id=user, session=[extra])  # events first, then the request's (views)
        assert ids(body) == offline(model, [clicked, extra], [4.0, 1.0])
        assert not {clicked, extra} & set(ids(body))


@session_loop
async def test_everything_the_visitor_saw_is_excluded_not_only_the_last_50(gateway: Gateway, model: Model) -> None:
    user = new_user()
    seen = [model.item_ids[r] for r in model.popular(60)[0]]
    start = now_ms() - 60_000
    await gateway.record(
        *({"user_id": user, "item_id": item, "timestamp_ms": start + n} for n, item in enumerate(seen))
    )
    body = await gateway.recommend(user_id=user, k=200)
    assert body["session_items_dropped"] == 10
    assert not set(seen) & set(ids(body))
    assert ids(body) == offline(model, seen, k=200, exclude=seen)
    again = await gateway.recommend(user_id=user, k=200, options={"include_seen": True})
    assert set(seen) & set(ids(again))


@session_loop
async def test_events_on_unknown_items_are_stored_and_ignored_for_the_vector(gateway: Gateway, model: Model) -> None:
    user, known = new_user(), model.item_ids[30]
    batch = await gateway.record({"user_id": user, "item_id": known}, {"user_id": user, "item_id": "new-arrival-1"})
    assert batch.json() == {"stored": 2, "unknown_item_ids": ["new-arrival-1"]}
    single = await gateway.record({"user_id": user, "item_id": "new-arrival-2", "type": "purchase"})
    assert single.json() == {"stored": True, "known_item": False}
    body = await gateway.recommend(user_id=user)
    assert body["unknown_item_ids"] == ["new-arrival-1", "new-arrival-2"]
    assert ids(body) == offline(model, [known]) and not body["degraded"]
    only_new = new_user()
    await gateway.record({"user_id": only_new, "item_id": "new-arrival-3"})
    cold = await gateway.recommend(user_id=only_new, k=5)
    assert ids(cold) == [model.item_ids[r] for r in model.popular(5)[0]]
    assert cold["unknown_item_ids"] == ["new-arrival-3"]


@session_loop
async def test_an_event_is_reflected_in_the_very_next_recommendation(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    user, item = new_user(), model.item_ids[42]
    cold = (await gateway.http.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    rows, _ = model.popular(10)
    assert ids(cold) == [model.item_ids[r] for r in rows]  # no events yet: popular items
    recorded = await gateway.http.post("/v1/events", json={"user_id": user, "item_id": item, "type": "view"})
    assert recorded.json() == {"stored": True, "known_item": True}
    warm = (await gateway.http.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    assert item not in ids(warm)
    assert ids(warm) == reference(model, [item])
    # Events come first, then the request's own items (views, as the event: equal weights, the offline query;
    # event types that weigh more are tested below).
    other = model.item_ids[43]
    both = (await gateway.http.post("/v1/recommend", json={"user_id": user, "session": [other]})).json()
    assert ids(both) == reference(model, [item, other])


@session_loop
async def test_event_batches_streams_and_unknown_items(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    user = new_user()
    batch = {"events": [{"user_id": user, "item_id": model.item_ids[i]} for i in (1, 2)]}
    batch["events"].append({"user_id": user, "item_id": "brand-new-item", "type": "purchase"})
    body = (await gateway.http.post("/v1/events", json=batch)).json()
    assert body == {"stored": 3, "unknown_item_ids": ["brand-new-item"]}
    single = (await gateway.http.post("/v1/events", json={"user_id": user, "item_id": "another-new"})).json()
    assert single == {"stored": True, "known_item": False}
    stored = await gateway.clients.events.recent_items(user, timeout_s=1)
    assert stored == [model.item_ids[1], model.item_ids[2], "brand-new-item", "another-new"]

    def stream(*items: str) -> list[pb.RecordEventRequest]:
        return [pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=i)) for i in items]

    reply = await gateway.stub.RecordEvents(iter(stream(model.item_ids[3], "zzz")), timeout=5)
    assert reply.stored == 2 and list(reply.unknown_item_ids) == ["zzz"]
    one = await gateway.stub.RecordEvent(stream(model.item_ids[4])[0], timeout=5)
    assert one.stored and one.known_item
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.RecordEvents(iter(stream("fine", "")), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "events[1]" in info.value.details()
    assert len(await gateway.clients.events.recent_items(user, timeout_s=1)) == 7  # nothing of the bad stream


@session_loop
async def test_event_history_is_bounded_and_expires(
    models_dir: Path, redis_server, stage_ports: dict[str, int]
) -> None:  # type: ignore[no-untyped-def]
    user = new_user()
    start_ms = int(time.time() * 1000) - 3_600_000
    events = [{"user_id": user, "item_id": f"i{n}", "timestamp_ms": start_ms + n} for n in range(120)]
    # No rate limit: 120 events of one visitor within a second are more than the default allows.
    async with running_gateway(models_dir, redis_server.url, stage_ports, event_rate_limit=0) as gateway:
        for start in range(0, 120, 60):
            response = await gateway.http.post("/v1/events", json={"events": events[start : start + 60]})
            assert response.status_code == 200
        redis = gateway.clients.events.redis
        assert await redis.llen(f"recmesh:events:{user}") == 100
        assert 29 * 86400 < await redis.ttl(f"recmesh:events:{user}") <= 30 * 86400
        assert (await gateway.clients.events.recent_items(user, timeout_s=1))[-1] == "i119"


def test_session_query_without_weights_or_with_equal_weights_is_unchanged(model: Model) -> None:
    rows = model.popular(8)[0]
    vectors = model.space.vectors[rows]
    plain = session_query(vectors, model.query_decay)
    np.testing.assert_array_equal(plain, model.query(rows))
    np.testing.assert_array_equal(session_query(vectors, model.query_decay, None), plain)
    np.testing.assert_array_equal(session_query(vectors, model.query_decay, np.full(8, 2.0)), plain)
    weighted = session_query(vectors, model.query_decay, np.array([3.0] + [1.0] * 7))
    assert not np.allclose(weighted, plain) and np.isclose(np.linalg.norm(weighted), 1.0)
    assert weighted @ vectors[0] > plain @ vectors[0]  # the heavier item pulls the query towards itself
    with pytest.raises(ValueError, match="2 weights for 8"):
        session_query(vectors, model.query_decay, np.ones(2))
