"""Real-time events: what a visitor just did shows in their very next recommendation (read-your-writes).

A gateway started as production starts it (``create_app(settings)``: its lifespan opens channels and Redis from
the settings, EVENT_WEIGHTS, EVENTS_PER_USER and EVENT_RATE_LIMIT included) in front of the three real stage
services on loopback and the session's private Redis. Served answers are compared with the offline pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from gateway import grpc_api
from gateway.app import create_app
from gateway.events import Event, EventStore, now_ms, parse_weights
from gateway.grpc_api import create_grpc_server
from recmesh.cli import main as cli
from recmesh.data.readers import read_csv
from recmesh.data.sessions import Dataset
from recmesh.evaluate.protocol import leave_one_out
from recmesh.evaluate.run import evaluate
from recmesh.events_export import CSV_HEADER, export_events
from recmesh.pipeline import MAX_SESSION, Model, load_model, session_query
from recmesh.v1 import common_pb2, recommendation_service_pb2, recommendation_service_pb2_grpc
from tests.gateway.test_gateway import STAGES, Stage, assert_error, gateway_settings, ids, start_stage
from tests.helpers import sample_sessions

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2
SLOW_MACHINE_BUDGET_MS = 10_000
OPTIONS = pb.RecommendOptions(budget_ms=SLOW_MACHINE_BUDGET_MS)


# -------------------------------------------------------------------------------------------------- harness
@dataclass
class Gateway:
    http: httpx.AsyncClient
    stub: recommendation_service_pb2_grpc.RecommendationServiceStub
    redis_url: str

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(path, json=body)

    async def recommend(self, **body: Any) -> dict[str, Any]:
        """A recommendation with a budget no loaded test machine runs out of (a late hop would degrade it)."""
        body["options"] = {"budget_ms": SLOW_MACHINE_BUDGET_MS, **body.get("options", {})}
        response = await self.post("/v1/recommend", body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert not answer["degraded"], answer["degradations"]
        return answer

    async def record(self, *events: dict[str, Any]) -> httpx.Response:
        return await self.post("/v1/events", {"events": list(events)} if len(events) != 1 else events[0])


@contextlib.asynccontextmanager
async def running_gateway(
    models_dir: Path, redis_url: str, ports: dict[str, int], **config: Any
) -> AsyncIterator[Gateway]:
    """A gateway as ``python -m gateway`` builds it, with settings fields overridden by ``config``. Redis may take
    a second here (a history read that times out would recommend without it: a busy test machine is no reason)."""
    config = {"redis_timeout_ms": 1000, **config}
    settings = gateway_settings(models_dir, redis_url, **ports).model_copy(update=config)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        server, port, _ = await create_grpc_server(app.state.core, "127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            try:
                yield Gateway(http, recommendation_service_pb2_grpc.RecommendationServiceStub(channel), redis_url)
            finally:
                await channel.close()
                await server.stop(None)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stages(models_dir: Path, redis_server) -> AsyncIterator[dict[str, int]]:  # type: ignore[no-untyped-def]
    started: dict[str, Stage] = {name: await start_stage(name, models_dir, redis_server.url) for name in STAGES}
    yield {name: stage.port for name, stage in started.items()}
    for stage in started.values():
        await stage.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(models_dir: Path, redis_server, stages: dict[str, int]) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    """The gateway with its default settings (weights view=1, click=1.5, add_to_cart=2, purchase=3)."""
    async with running_gateway(models_dir, redis_server.url, stages) as gateway:
        yield gateway


def new_user() -> str:
    return f"user-{uuid.uuid4().hex}"


def offline(
    model: Model,
    session: list[str],
    weights: list[float] | None = None,
    k: int = 10,
    exclude: list[str] | None = None,
) -> list[str]:
    """The offline pipeline (recmesh.evaluate.run's steps) for a session of known items with optional weights:
    query of the most recent MAX_SESSION, candidates excluding ``exclude`` (default: the session), ranking."""
    rows = np.array([model.index_of[i] for i in session], dtype=np.int64)
    recent = rows[-MAX_SESSION:]
    w = None if weights is None else np.asarray(weights[-MAX_SESSION:], dtype=np.float32)
    query = session_query(model.space.vectors[recent], model.query_decay, w)
    excluded, _ = model.lookup(exclude if exclude is not None else session)
    n = max(int(model.manifest["params"]["candidates"]), k)  # the gateway's count: the bundle's, at least k
    candidates, scores = model.retrieve(query, n, np.unique(excluded))
    ranked, _ = model.rank(recent, candidates, scores)
    return [model.item_ids[r] for r in ranked[:k]]


def farthest_from(model: Model, item: str, among: int = 200) -> str:
    """Of the `among` most popular items, the one least similar to ``item``: a change of topic."""
    rows, _ = model.popular(among)
    sims = model.space.vectors[rows] @ model.space.vectors[model.index_of[item]]
    return model.item_ids[int(rows[int(np.argmin(sims))])]


def neighbours(model: Model, item: str, k: int = 20) -> set[str]:
    row = model.index_of[item]
    rows, _ = model.retrieve(model.query(np.array([row])), k, np.array([row]))
    return {model.item_ids[r] for r in rows}


# ------------------------------------------------------------------------------------- read-your-writes
@session_loop
async def test_an_event_posted_over_rest_shows_in_the_next_recommendation(gw: Gateway, model: Model) -> None:
    user, first = new_user(), model.item_ids[42]
    assert (await gw.record({"user_id": user, "item_id": first})).status_code == 200
    before = ids(await gw.recommend(user_id=user))
    assert before == offline(model, [first])
    jump = farthest_from(model, first)
    recorded = await gw.record({"user_id": user, "item_id": jump, "type": "view"})
    assert recorded.json() == {"stored": True, "known_item": True}
    after = ids(await gw.recommend(user_id=user))  # no sleep: the event is stored before the call returns
    assert jump not in after and first not in after
    assert after == offline(model, [first, jump])
    near = neighbours(model, jump)
    assert len(near & set(after)) > len(near & set(before))  # the new item's neighbours moved up


async def grpc_recommend(gw: Gateway, user: str) -> list[str]:
    reply = await gw.stub.Recommend(pb.RecommendRequest(user_id=user, k=10, options=OPTIONS), timeout=5)
    assert not reply.degraded, reply.degradations
    return [i.item_id for i in reply.items]


@session_loop
async def test_an_event_recorded_over_grpc_shows_in_the_next_recommendation(gw: Gateway, model: Model) -> None:
    user, first = new_user(), model.item_ids[7]
    await gw.stub.RecordEvent(pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=first)), timeout=5)
    before = await grpc_recommend(gw, user)
    jump = farthest_from(model, first)
    reply = await gw.stub.RecordEvent(
        pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=jump, type=common_pb2.EVENT_TYPE_VIEW)),
        timeout=5,
    )
    assert reply.stored and reply.known_item
    after = await grpc_recommend(gw, user)  # no sleep: stored before RecordEvent answered
    assert jump not in after and after == offline(model, [first, jump])
    assert after != before
    # A client stream, then the next recommendation.
    more = [model.item_ids[i] for i in (11, 12)]
    stream = [pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=i)) for i in more]
    assert (await gw.stub.RecordEvents(iter(stream), timeout=5)).stored == 2
    assert await grpc_recommend(gw, user) == offline(model, [first, jump, *more])


@session_loop
async def test_event_types_weigh_into_the_session_vector(gw: Gateway, model: Model) -> None:
    a, b = model.item_ids[42], farthest_from(model, model.item_ids[42])
    viewed, bought = new_user(), new_user()
    start = now_ms() - 10_000
    await gw.record({"user_id": viewed, "item_id": a, "timestamp_ms": start}, {"user_id": viewed, "item_id": b})
    await gw.record(
        {"user_id": bought, "item_id": a, "type": "purchase", "timestamp_ms": start},
        {"user_id": bought, "item_id": b, "type": "view"},
    )
    as_views = ids(await gw.recommend(user_id=viewed, k=20))
    with_purchase = ids(await gw.recommend(user_id=bought, k=20))
    assert as_views == offline(model, [a, b], k=20)  # all views: the offline query, bit for bit
    assert with_purchase == offline(model, [a, b], [3.0, 1.0], k=20)  # purchase = 3 x a view (the default)
    assert with_purchase != as_views
    rows = np.array([model.index_of[a], model.index_of[b]])
    vectors = model.space.vectors[rows]
    weighted = session_query(vectors, model.query_decay, np.array([3.0, 1.0]))
    assert weighted @ vectors[0] > model.query(rows) @ vectors[0]  # the purchase pulls the query towards its item


@session_loop
async def test_configured_weights_and_a_request_with_both_user_and_session(
    models_dir: Path, redis_server, stages: dict[str, int], model: Model
) -> None:  # type: ignore[no-untyped-def]
    weights = parse_weights("view=1,click=4")
    async with running_gateway(models_dir, redis_server.url, stages, event_weights=weights) as custom:
        user, clicked, extra = new_user(), model.item_ids[5], model.item_ids[9]
        await custom.record({"user_id": user, "item_id": clicked, "type": "click"})
        body = await custom.recommend(user_id=user, session=[extra])  # events first, then the request's (views)
        assert ids(body) == offline(model, [clicked, extra], [4.0, 1.0])
        assert not {clicked, extra} & set(ids(body))


@session_loop
async def test_everything_the_visitor_saw_is_excluded_not_only_the_last_50(gw: Gateway, model: Model) -> None:
    user = new_user()
    seen = [model.item_ids[r] for r in model.popular(60)[0]]
    start = now_ms() - 60_000
    await gw.record(*({"user_id": user, "item_id": item, "timestamp_ms": start + n} for n, item in enumerate(seen)))
    body = await gw.recommend(user_id=user, k=200)
    assert body["session_items_dropped"] == 10
    assert not set(seen) & set(ids(body))
    assert ids(body) == offline(model, seen, k=200, exclude=seen)
    again = await gw.recommend(user_id=user, k=200, options={"include_seen": True})
    assert set(seen) & set(ids(again))


@session_loop
async def test_events_on_unknown_items_are_stored_and_ignored_for_the_vector(gw: Gateway, model: Model) -> None:
    user, known = new_user(), model.item_ids[30]
    batch = await gw.record({"user_id": user, "item_id": known}, {"user_id": user, "item_id": "new-arrival-1"})
    assert batch.json() == {"stored": 2, "unknown_item_ids": ["new-arrival-1"]}
    single = await gw.record({"user_id": user, "item_id": "new-arrival-2", "type": "purchase"})
    assert single.json() == {"stored": True, "known_item": False}
    body = await gw.recommend(user_id=user)
    assert body["unknown_item_ids"] == ["new-arrival-1", "new-arrival-2"]
    assert ids(body) == offline(model, [known]) and not body["degraded"]
    only_new = new_user()
    await gw.record({"user_id": only_new, "item_id": "new-arrival-3"})
    cold = await gw.recommend(user_id=only_new, k=5)
    assert ids(cold) == [model.item_ids[r] for r in model.popular(5)[0]]
    assert cold["unknown_item_ids"] == ["new-arrival-3"]


# ------------------------------------------------------------------------------------------------ bad input
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
]


@session_loop
@pytest.mark.parametrize(("what", "body", "says"), BAD, ids=[b[0] for b in BAD])
async def test_bad_events_are_400s_that_say_why(gw: Gateway, what: str, body: Any, says: str) -> None:
    assert_error(await gw.post("/v1/events", body), 400, "INVALID_ARGUMENT", says)


@session_loop
async def test_a_batch_with_one_bad_event_stores_nothing_and_says_so(gw: Gateway, model: Model) -> None:
    user = new_user()
    good = {"user_id": user, "item_id": model.item_ids[1]}
    error = assert_error(await gw.record(good, {**good, "item_id": " x"}), 400, "INVALID_ARGUMENT", "events[1]")
    assert "nothing was stored" in error["message"]
    redis = aioredis.Redis.from_url(gw.redis_url)
    try:
        assert await redis.llen(f"recmesh:events:{user}") == 0
    finally:
        await redis.aclose()


@session_loop
async def test_grpc_bad_events_and_a_stream_over_the_cap_store_nothing(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
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
            await gw.stub.RecordEvent(bad, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gw.stub.RecordEvents(iter([req(), req(type=7)]), timeout=5)
    assert "events[1]" in info.value.details() and "nothing was stored" in info.value.details()
    monkeypatch.setattr(grpc_api, "MAX_STREAM_EVENTS", 5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gw.stub.RecordEvents(iter([req()] * 6), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 5 events" in info.value.details()
    assert (await gw.stub.RecordEvents(iter([req()] * 5), timeout=5)).stored == 5
    assert (await gw.recommend(user_id=user))["unknown_item_ids"] == ["i"]  # only the good stream was stored


async def start_of_a_second() -> None:
    """Wait until early in a wall-clock second, so a few calls fall into one rate-limit window."""
    fraction = time.time() % 1.0
    if fraction > 0.5:
        await asyncio.sleep(1.0 - fraction + 0.01)


@session_loop
async def test_a_flood_from_one_visitor_is_rate_limited_and_nothing_of_it_is_stored(
    models_dir: Path, redis_server, stages: dict[str, int], model: Model
) -> None:  # type: ignore[no-untyped-def]
    async with running_gateway(models_dir, redis_server.url, stages, event_rate_limit=5) as limited:
        flooder, other = new_user(), new_user()
        item = model.item_ids[3]
        await start_of_a_second()
        too_many = await limited.record(*[{"user_id": flooder, "item_id": item}] * 6)
        error = assert_error(too_many, 429, "RESOURCE_EXHAUSTED", "5 events per second")
        assert "Nothing of this call was stored" in error["message"] and flooder in error["message"]
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
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            assert await redis.llen(f"recmesh:events:{flooder}") == 5
            assert await redis.llen(f"recmesh:events:{other}") == 0
        finally:
            await redis.aclose()
        assert (await limited.record({"user_id": other, "item_id": item})).status_code == 200  # others unaffected


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


def test_event_weights_parse_with_defaults_and_reject_nonsense() -> None:
    assert parse_weights("purchase=5, click=2") == {"view": 1.0, "click": 2.0, "add_to_cart": 2.0, "purchase": 5.0}
    for bad in ("like=2", "view=0", "view=-1", "view=nan", "view", "view=x"):
        with pytest.raises(ValueError):
            parse_weights(bad)


# ------------------------------------------------------------------------------------------ event log export
@session_loop
async def test_exported_events_read_back_as_the_recorded_sequences_and_train_a_bundle(
    models_dir: Path, redis_server, stages: dict[str, int], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url = redis_server.url.rsplit("/", 1)[0] + "/7"  # a database of its own: the export holds exactly these events
    redis = aioredis.Redis.from_url(url)
    await redis.flushdb()
    sessions = sample_sessions(300)
    users = [f"visitor {n}" for n in range(len(sessions))]  # spaces and all: ids are stored as sent
    start = now_ms() - 3_600_000
    events = [
        {
            "user_id": user,
            "item_id": item,
            "timestamp_ms": start + t,
            "type": "click" if t % 3 else "view",
            **({"session_id": f"s-{n}"} if n % 2 else {}),
        }
        for n, (user, seq) in enumerate(zip(users, sessions, strict=True))
        for t, item in enumerate(seq)
    ]
    events.reverse()  # sent newest first: the export orders each visitor's events by time
    async with running_gateway(models_dir, url, stages) as gateway:
        for i in range(0, len(events), 500):
            assert (await gateway.record(*events[i : i + 500])).status_code == 200
    await redis.set("recmesh:ratelimit:events:x:1", 3)  # other keys are not events
    await redis.set("recmesh:events:not-a-list", "x")  # nor is a key of another type under the prefix
    await redis.rpush("recmesh:events:garbage", b"not json", b'{"no": "item"}')  # nor entries we did not write
    await redis.aclose()

    out = tmp_path / "events.csv"
    assert cli(["events", "export", "--redis-url", url, "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_HEADER and len(rows) == len(events) + 1
    assert {r[4] for r in rows[1:]} == {"view", "click"}
    assert {r[0] for r in rows[1:] if r[1] == users[0]} == {users[0]}  # no session id: the visitor's id
    assert {r[0] for r in rows[1:] if r[1] == users[1]} == {"s-1"}
    dataset = read_csv(out, group_by="user")
    assert dict(zip(dataset.users, dataset.sequences, strict=True)) == dict(zip(users, sessions, strict=True))

    jsonl = export_events(url, tmp_path / "events.jsonl")
    assert jsonl.events == len(events) and jsonl.users == len(users)
    first = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])
    assert set(first) == {"user_id", "item_id", "type", "timestamp_ms", "session_id"}

    trained = tmp_path / "models"
    assert (
        cli(["train", "--data", str(out), "--out", str(trained), "--index", "exact", "--epochs", "2", "--workers", "1"])
        == 0
    )
    retrained = load_model(next(trained.iterdir()))
    assert retrained.n_items == len(Dataset("x", users, sessions).items())
    assert retrained.manifest["dataset"]["name"] == "events"


# ------------------------------------------------------------------------------------------------- replay
@session_loop
async def test_replaying_held_out_sessions_as_events_gives_the_offline_hits(
    gw: Gateway, model: Model, bundle_path: Path
) -> None:
    """The served pipeline equals the offline one: each test user's history posted as events (views, oldest
    first), then a recommendation by user id; the same top 10 and hits as recmesh.evaluate.run."""
    dataset = Dataset("synth", [f"u{n}" for n in range(3000)], sample_sessions(3000))  # the bundle's data
    split = leave_one_out(dataset, model.item_ids)
    n_users = 30
    candidates = int(model.manifest["params"]["candidates"])
    run = uuid.uuid4().hex[:8]
    served_hits, offline_hits = [], []
    for n, (history, target) in enumerate(zip(split.test_history[:n_users], split.test_target[:n_users], strict=True)):
        user, items = f"replay-{run}-{n}", [model.item_ids[r] for r in history]
        start = now_ms() - len(items)
        recorded = await gw.record(
            *({"user_id": user, "item_id": item, "timestamp_ms": start + t} for t, item in enumerate(items))
        )
        assert recorded.status_code == 200, recorded.text
        body = await gw.recommend(user_id=user, k=10, options={"candidate_count": candidates})
        expected = offline(model, items)
        assert ids(body) == expected, f"user {n}"
        served_hits.append(model.item_ids[target] in ids(body))
        offline_hits.append(model.item_ids[target] in expected)
    report = evaluate(bundle_path, dataset, limit=n_users, progress=False)
    assert served_hits == offline_hits
    assert np.mean(served_hits) == pytest.approx(report["systems"]["pipeline"]["hr@10"])


def test_event_store_refuses_a_nonsense_configuration() -> None:
    client = aioredis.Redis()
    with pytest.raises(ValueError):
        EventStore(client, keep=0)
    with pytest.raises(ValueError):
        EventStore(client, weights="view=0")
    assert EventStore(client).rate_limit == 0  # the class has no limit; the gateway's settings set one
    assert Event("u", "i").type == "view"
