"""Bad events are refused whole with a message that says why (REST 400, gRPC INVALID_ARGUMENT), a stream over
its cap stores nothing, a visitor over the rate limit stores nothing (429), and nonsense configuration is
refused at start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import redis.asyncio as aioredis

from gateway.event_store import EventStore
from gateway.events import Event, now_ms, parse_weights
from recmesh.pipeline import Model
from recmesh.v1 import common_pb2, recommendation_service_pb2
from serving import errors, limits
from tests.gateway.harness import Gateway, assert_error, new_user, running_gateway

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2


def event(**fields: Any) -> dict[str, Any]:
    return {"user_id": "u-bad", "item_id": "i-1", **fields}


BAD = [
    ("no user", {"item_id": "a"}, "user_id"),
    ("empty user", event(user_id=""), "user_id"),
    ("no item", {"user_id": "u"}, "item_id"),
    ("item with surrounding spaces", event(item_id=" a "), "whitespace"),
    ("item with a newline", event(item_id="a\nb"), "control"),
    ("user id too long", event(user_id="u" * 257), "user_id"),
    ("unknown type", event(type="like"), "type"),
    ("a day and more ahead", event(timestamp_ms=now_ms() + 25 * 3600 * 1000), "future"),
    ("timestamp in seconds", event(timestamp_ms=int(time.time())), "seconds, not milliseconds"),
    ("before 2000", event(timestamp_ms=5), "2000-01-01"),
    ("negative time", event(timestamp_ms=-5), "timestamp_ms"),
    ("session id too long", event(session_id="s" * 257), "session_id"),
    ("unknown field", event(colour="red"), "colour"),
    ("empty batch", {"events": []}, "events"),
    ("batch over 500", {"events": [event()] * 501}, "500"),
    ("far future", {"user_id": "u", "item_id": "a", "timestamp_ms": 99_999_999_999_999}, "future"),
    ("bad event in a batch", {"events": [{"user_id": "u", "item_id": "a"}, {"user_id": "u"}]}, "events.1"),
    ("empty item", {"user_id": "u", "item_id": ""}, "item_id"),
]


@session_loop
@pytest.mark.parametrize(("what", "body", "says"), BAD, ids=[b[0] for b in BAD])
async def test_bad_events_are_400s_that_say_why(gateway: Gateway, what: str, body: Any, says: str) -> None:
    assert_error(await gateway.post("/v1/events", body), 400, "INVALID_ARGUMENT", says)


@session_loop
async def test_a_batch_with_one_bad_event_stores_nothing_and_says_so(gateway: Gateway, model: Model) -> None:
    user = new_user()
    good = {"user_id": user, "item_id": model.item_ids[1]}
    error = assert_error(await gateway.record(good, {**good, "item_id": " x"}), 400, "INVALID_ARGUMENT", "events[1]")
    assert "nothing was stored" in error["message"]
    redis = aioredis.Redis.from_url(gateway.redis_url)
    try:
        assert await redis.llen(f"recmesh:events:{user}") == 0
    finally:
        await redis.aclose()


@session_loop
async def test_grpc_bad_events_and_a_stream_over_the_cap_store_nothing(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = new_user()

    def req(**fields: Any) -> pb.RecordEventRequest:
        return pb.RecordEventRequest(event=common_pb2.Event(**{"user_id": user, "item_id": "i", **fields}))

    for bad, says in (
        (req(type=9), "EVENT_TYPE_PURCHASE"),
        (req(item_id=""), "item_id"),
        (req(timestamp_ms=now_ms() + 3 * 86_400_000), "future"),
        (req(timestamp_ms=1_700_000_000), "seconds"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gateway.stub.RecordEvent(bad, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.RecordEvents(iter([req(), req(type=7)]), timeout=5)
    assert "events[1]" in info.value.details() and "nothing was stored" in info.value.details()
    monkeypatch.setattr(limits, "MAX_EVENTS_PER_STREAM", 5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.RecordEvents(iter([req()] * 6), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 5 events" in info.value.details()
    assert (await gateway.stub.RecordEvents(iter([req()] * 5), timeout=5)).stored == 5
    assert (await gateway.recommend(user_id=user))["unknown_item_ids"] == ["i"]  # only the good stream was stored


async def start_of_a_second() -> None:
    """Wait until early in a wall-clock second, so a few calls fall into one rate-limit window."""
    fraction = time.time() % 1.0
    if fraction > 0.5:
        await asyncio.sleep(1.0 - fraction + 0.01)


@session_loop
async def test_a_flood_from_one_visitor_is_rate_limited_and_nothing_of_it_is_stored(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model: Model
) -> None:  # type: ignore[no-untyped-def]
    async with running_gateway(models_dir, redis_server.url, stage_ports, event_rate_limit=5) as limited:
        flooder, other = new_user(), new_user()
        item = model.item_ids[3]
        await start_of_a_second()
        too_many = await limited.record(*[{"user_id": flooder, "item_id": item}] * 6)
        error = assert_error(too_many, 429, "RESOURCE_EXHAUSTED", "5 events per second")
        assert "Nothing of this call was stored" in error["message"] and flooder in error["message"]
        assert too_many.headers["retry-after"] == "1"  # the limit's window: one second
        assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
        ok = await limited.record(*[{"user_id": flooder, "item_id": item}] * 5)
        assert ok.status_code == 200 and ok.json()["stored"] == 5
        one_more = await limited.record({"user_id": flooder, "item_id": item})
        assert_error(one_more, 429, "RESOURCE_EXHAUSTED", "5 were already stored this second")
        mixed = await limited.record({"user_id": other, "item_id": item}, {"user_id": flooder, "item_id": item})
        assert_error(mixed, 429, "RESOURCE_EXHAUSTED", flooder)  # all or none: the other visitor's event neither
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await limited.stub.RecordEvent(
                pb.RecordEventRequest(event=common_pb2.Event(user_id=flooder, item_id=item)), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert errors.from_rpc_error(info.value).retry_after_s == 1.0  # RetryInfo in grpc-status-details-bin
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            assert await redis.llen(f"recmesh:events:{flooder}") == 5
            assert await redis.llen(f"recmesh:events:{other}") == 0
        finally:
            await redis.aclose()
        assert (await limited.record({"user_id": other, "item_id": item})).status_code == 200  # others unaffected


def test_event_weights_parse_with_defaults_and_reject_nonsense() -> None:
    assert parse_weights("purchase=5, click=2") == {"view": 1.0, "click": 2.0, "add_to_cart": 2.0, "purchase": 5.0}
    for bad in ("like=2", "view=0", "view=-1", "view=nan", "view", "view=x"):
        with pytest.raises(ValueError):
            parse_weights(bad)


def test_event_store_refuses_a_nonsense_configuration() -> None:
    client = aioredis.Redis()
    with pytest.raises(ValueError):
        EventStore(client, keep=0)
    with pytest.raises(ValueError):
        EventStore(client, weights="view=0")
    assert EventStore(client).rate_limit == 0  # the class has no limit; the gateway's settings set one
    assert Event("u", "i").type == "view"
