"""Recorded events as data: exported from Redis they read back as the recorded sequences and train a bundle, and
replaying held-out sessions as events gives the offline evaluation's hits."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from gateway.events import now_ms
from recmesh.cli import main as cli
from recmesh.data.readers import read_csv
from recmesh.data.sessions import Dataset
from recmesh.evaluate.protocol import leave_one_out
from recmesh.evaluate.run import evaluate
from recmesh.events_export import CSV_HEADER, export_events
from recmesh.pipeline import Model, load_model
from tests.gateway.harness import Gateway, ids, offline, running_gateway
from tests.helpers import sample_sessions

session_loop = pytest.mark.asyncio(loop_scope="session")


@session_loop
async def test_exported_events_read_back_as_the_recorded_sequences_and_train_a_bundle(
    models_dir: Path, redis_server, stage_ports: dict[str, int], tmp_path: Path
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
    async with running_gateway(models_dir, url, stage_ports) as gateway:
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


@session_loop
async def test_replaying_held_out_sessions_as_events_gives_the_offline_hits(
    gateway: Gateway, model: Model, bundle_path: Path
) -> None:
    """The served pipeline equals the offline one: each test user's history posted as events (views, oldest
    first), then a recommendation by user id; the same top 10 and hits as recmesh.evaluate.run."""
    dataset = Dataset("synth", [f"u{n}" for n in range(3000)], sample_sessions(3000))  # the bundle's data
    split = leave_one_out(dataset, model.item_ids)
    n_users = 30
    run = uuid.uuid4().hex[:8]
    served_hits, offline_hits = [], []
    for n, (history, target) in enumerate(zip(split.test_history[:n_users], split.test_target[:n_users], strict=True)):
        user, items = f"replay-{run}-{n}", [model.item_ids[r] for r in history]
        start = now_ms() - len(items)
        recorded = await gateway.record(
            *({"user_id": user, "item_id": item, "timestamp_ms": start + t} for t, item in enumerate(items))
        )
        assert recorded.status_code == 200, recorded.text
        body = await gateway.recommend(user_id=user, k=10)  # the bundle's default recipe, as evaluate uses
        expected = offline(model, items)
        assert ids(body) == expected, f"user {n}"
        served_hits.append(model.item_ids[target] in ids(body))
        offline_hits.append(model.item_ids[target] in expected)
    report = evaluate(bundle_path, dataset, limit=n_users, progress=False)
    assert served_hits == offline_hits
    assert np.mean(served_hits) == pytest.approx(report["systems"]["pipeline"]["hr@10"])
