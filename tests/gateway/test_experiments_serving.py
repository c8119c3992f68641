"""A/B experiments through the gateway, both protocols: sticky assignment, the variant's options applied, the
answer naming its experiment and variant, attribution of events, impressions, forced variants and a holdout.

Its own Redis, stages and gateway: a running experiment changes answers the other gateway tests compare with the
offline pipeline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from recmesh.experiments.config import ExperimentSet, parse_config, start_experiment, stop_experiment
from recmesh.redis_layout import EXPERIMENTS_KEY, experiment_counts_key
from recmesh.v1 import recommendation_service_pb2 as pb
from tests.gateway.harness import Gateway, assert_error, ids, isolated_gateway, reference

session_loop = pytest.mark.asyncio(loop_scope="session")

EXPERIMENT = {
    "name": "ranker-test",
    "unit": "visitor",
    "variants": [
        {"name": "control", "share": 50, "options": {}},
        {"name": "no-ranking", "share": 40, "options": {"skip_ranking": True}},
        {"name": "holdout", "share": 10, "holdout": True},
    ],
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lab(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """An isolated gateway with EXPERIMENT running."""
    async with isolated_gateway(models_dir, tmp_path_factory.mktemp("experiments-redis")) as gateway:
        client = aioredis.from_url(gateway.redis_url)
        config = start_experiment(ExperimentSet(), EXPERIMENT, "2026-12-01T00:00:00Z")
        await client.set(EXPERIMENTS_KEY, config.dumps())
        await gateway.clients.experiments.load_now()
        yield gateway
        await client.aclose()


async def recommend(lab: Gateway, **body: Any) -> dict[str, Any]:
    response = await lab.post("/v1/recommend", {"k": 10, "options": {"budget_ms": 5000}, **body})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@session_loop
async def test_a_visitor_keeps_its_variant_and_gets_its_options(lab: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, set[str]] = {}
    for i in range(60):
        user = f"visitor-{i}"
        answers = [await recommend(lab, session=session_items, session_id=user) for _ in range(2)]
        assert answers[0]["variant"] == answers[1]["variant"]  # sticky
        assert answers[0]["experiment"] == "ranker-test"
        seen.setdefault(answers[0]["variant"], set()).add(json.dumps(ids(answers[0])))
    assert set(seen) == {"control", "no-ranking", "holdout"}
    assert seen["control"] == {json.dumps(reference(model, session_items))}  # the full pipeline
    assert seen["no-ranking"] == {json.dumps(reference(model, session_items, rank=False))}  # retrieval order
    popular, _ = model.popular(10, model.lookup(session_items)[0])
    assert seen["holdout"] == {json.dumps([model.item_ids[r] for r in popular])}  # popular items, none seen


@session_loop
async def test_the_same_visitor_gets_the_same_variant_over_grpc(lab: Gateway, session_items) -> None:  # type: ignore[no-untyped-def]
    for i in range(10):
        rest = await recommend(lab, session=session_items, user_id=f"member-{i}")
        reply = await lab.stub.Recommend(
            pb.RecommendRequest(session_item_ids=session_items, user_id=f"member-{i}", k=10), timeout=5
        )
        assert (reply.experiment, reply.variant) == (rest["experiment"], rest["variant"])
        assert reply.recommendation_id.endswith(f".ranker-test.{rest['variant']}")


@session_loop
async def test_a_request_without_a_visitor_id_is_in_no_experiment(lab: Gateway, session_items) -> None:  # type: ignore[no-untyped-def]
    answer = await recommend(lab, session=session_items)
    assert (answer["experiment"], answer["variant"]) == ("", "")
    assert "." not in answer["recommendation_id"]


@session_loop
async def test_a_forced_variant_serves_it_and_an_unknown_one_is_a_400(lab: Gateway, session_items) -> None:  # type: ignore[no-untyped-def]
    for variant in ("control", "no-ranking", "holdout"):
        answer = await recommend(lab, session=session_items, session_id="qa", forced_variant=variant)
        assert answer["variant"] == variant
    response = await lab.post("/v1/recommend", {"session": session_items, "forced_variant": "nope"})
    assert_error(response, 400, "INVALID_ARGUMENT", "nope")


@session_loop
async def test_events_echoing_a_recommendation_id_are_counted_for_its_variant(lab: Gateway, session_items) -> None:  # type: ignore[no-untyped-def]
    client = aioredis.from_url(lab.redis_url)
    key = experiment_counts_key("ranker-test")
    before = {k.decode(): int(v) for k, v in (await client.hgetall(key)).items()}
    sent: dict[str, int] = {}
    for i in range(12):
        answer = await recommend(lab, session=session_items, user_id=f"shopper-{i}")
        event = {
            "user_id": f"shopper-{i}",
            "item_id": ids(answer)[0],
            "type": "click",
            "session_id": answer["recommendation_id"],
            "timestamp_ms": 1_700_000_000_000 + i,
        }
        assert (await lab.record(event)).status_code == 200
        assert (await lab.record(event)).status_code == 200  # a retry of the same event: stored and counted once
        sent[answer["variant"]] = sent.get(answer["variant"], 0) + 1
    await lab.clients.experiment_counts.flush()
    after = {k.decode(): int(v) for k, v in (await client.hgetall(key)).items()}
    for variant, n in sent.items():
        assert after.get(f"{variant}:click", 0) - before.get(f"{variant}:click", 0) == n
        assert after.get(f"{variant}:impressions", 0) - before.get(f"{variant}:impressions", 0) >= n
    await client.aclose()


@session_loop
async def test_stopping_the_experiment_ends_assignment(lab: Gateway, session_items) -> None:  # type: ignore[no-untyped-def]
    client = aioredis.from_url(lab.redis_url)
    current = parse_config(await client.get(EXPERIMENTS_KEY))
    await client.set(EXPERIMENTS_KEY, stop_experiment(current, "ranker-test", "2026-12-01T01:00:00Z").dumps())
    await lab.clients.experiments.load_now()
    answer = await recommend(lab, session=session_items, user_id="late-visitor")
    assert answer["experiment"] == ""
    await client.aclose()


def test_a_variant_merges_into_the_request_as_merge_options_says() -> None:
    from gateway.experiments import Assignment
    from gateway.recommend import RecommendOptions, RecommendRequest, with_variant
    from gateway.rules import BoostRule, DiversityRule, RuleOptions

    mine = RecommendRequest(
        ["a"],
        options=RecommendOptions(rules=RuleOptions(filter="price < 50", boosts=[BoostRule("available", add=1.0)])),
    )
    variant = {
        "filter": 'brand == "x"',
        "boosts": [{"filter": "new", "multiply": 2.0}],
        "diversity": {"attribute": "brand", "max_per_value": 1},
        "sources": "covisit:100",
        "model_version": "v2",
    }
    merged = with_variant(mine, Assignment("e", "b", variant, holdout=False))
    rules = merged.options.rules
    assert rules.filter == '(price < 50) and (brand == "x")'
    assert rules.boosts == [BoostRule("available", add=1.0), BoostRule("new", multiply=2.0)]
    assert rules.diversity == DiversityRule("brand", 1)
    assert (merged.options.sources, merged.model_version, merged.options.skip_ranking) == ("covisit:100", "v2", False)
    assert with_variant(mine, Assignment("e", "a", {}, holdout=False)) == mine
