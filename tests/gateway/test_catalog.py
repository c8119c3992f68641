"""The live item catalogue through the gateway, both protocols: the items API, filters (strict and relaxed),
availability, boosts and includes, pins, diversity, explanations and cold start.

The module runs its own Redis, stage services and gateway: it writes a catalogue (with unavailable items) that the
other gateway tests, which compare answers with the unfiltered offline pipeline, must not see.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from recmesh.catalog.files import load_catalog
from recmesh.catalog.table import Catalog
from recmesh.v1 import catalog_pb2
from recmesh.v1 import recommendation_service_pb2 as pb
from tests.gateway.harness import Gateway, assert_error, ids, isolated_gateway

BUDGET = {"budget_ms": 5000}
session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shop(models_dir: Path, bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """A gateway and stages over a Redis of their own, holding the bundle's catalogue with every item available."""
    async with isolated_gateway(models_dir, tmp_path_factory.mktemp("catalog-redis")) as gateway:
        docs = [{"item_id": i, "attributes": {**a, "available": True}} for i, a in bundle_catalog(bundle_path).docs()]
        for start in range(0, len(docs), 1000):
            response = await gateway.post("/v1/items", {"items": docs[start : start + 1000]})
            assert response.status_code == 200, response.text
        await caught_up(gateway)
        yield gateway


async def caught_up(gateway: Gateway, timeout_s: float = 10.0) -> None:
    """Wait until candidate generation has read the bulk load (in this one test process the stages share the
    event loop with the gateway, so a big catch-up outlasts the 20 ms a request waits for it)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body = {"session": ["i1"], "options": {"filter": "exists(category)", "budget_ms": 5000}}
        answer = (await gateway.post("/v1/recommend", body)).json()
        if not answer.get("degraded", True) or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)


def bundle_catalog(bundle_path: Path) -> Catalog:
    catalog = load_catalog(bundle_path)
    assert catalog is not None and len(catalog) > 0, "the test bundle carries the synthetic catalogue"
    return catalog


async def attributes(shop: Gateway, item_id: str) -> dict[str, Any]:
    response = await shop.http.get(f"/v1/items/{item_id}")
    assert response.status_code == 200, response.text
    return response.json()["attributes"]  # type: ignore[no-any-return]


async def recommend(shop: Gateway, session: list[str], k: int = 10, **options: Any) -> dict[str, Any]:
    response = await shop.post("/v1/recommend", {"session": session, "k": k, "options": {**BUDGET, **options}})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert not answer["degraded"], answer["degradations"]
    return answer


def common_value(bundle_path: Path, attribute: str) -> str:
    """The attribute's most frequent value in the catalogue."""
    catalog = bundle_catalog(bundle_path)
    column = catalog.column(attribute)
    codes = column.values[: len(catalog)][column.present[: len(catalog)]]
    return column.vocab[int(np.bincount(codes).argmax())]


# -------------------------------------------------------------------------------------------- the items API
@session_loop
async def test_items_are_written_read_patched_and_deleted(shop: Gateway) -> None:
    put = await shop.http.put("/v1/items/new-1", json={"attributes": {"category": "c99", "price": 12.5}})
    assert put.status_code == 200, put.text
    seq = put.json()["catalog_seq"]
    got = await shop.http.get("/v1/items/new-1")
    assert got.json() == {"item_id": "new-1", "attributes": {"category": "c99", "price": 12.5}, "known_to_model": False}
    patched = await shop.http.patch("/v1/items/new-1", json={"attributes": {"price": None, "available": False}})
    assert patched.json()["catalog_seq"] > seq
    assert await attributes(shop, "new-1") == {"category": "c99", "available": False}
    replaced = await shop.http.put("/v1/items/new-1", json={"attributes": {"category": "c98"}})
    assert replaced.status_code == 200
    assert await attributes(shop, "new-1") == {"category": "c98"}
    deleted = await shop.http.delete("/v1/items/new-1")
    assert deleted.json()["count"] == 1
    assert_error(await shop.http.get("/v1/items/new-1"), 404, "NOT_FOUND", "not in the catalogue")
    batch = [{"item_id": f"batch-{i}", "attributes": {"category": "c96"}} for i in range(3)]
    assert (await shop.post("/v1/items", {"items": batch})).json()["count"] == 3
    deleted = await shop.post("/v1/items:delete", {"item_ids": ["batch-0", "batch-1", "batch-2", "never-there"]})
    assert deleted.json()["count"] == 3
    assert_error(await shop.http.get("/v1/items/batch-1"), 404, "NOT_FOUND", "not in the catalogue")


@session_loop
async def test_a_bad_write_is_refused_whole_and_names_the_problem(shop: Gateway) -> None:
    before = await attributes(shop, "i1")
    for body, says in (
        (
            {
                "items": [
                    {"item_id": "i1", "attributes": {"price": 1.0}},
                    {"item_id": "x", "attributes": {"price": "high"}},
                ]
            },
            "expected a number",
        ),
        ({"items": [{"item_id": "i1", "attributes": {"price": 2.0}}, {"item_id": "i1", "attributes": {}}]}, "twice"),
        ({"items": [{"item_id": "i1", "attributes": {"price": None}}]}, "only with merge"),
        ({"items": [{"item_id": "i1", "attributes": {"bad name": 1}}]}, "bad name"),
        ({"items": [{"item_id": "i1", "attributes": {"tags": ["a"]}}]}, "tags"),
        ({"items": []}, "items"),
        ({"items": [{"item_id": f"n{i}", "attributes": {}} for i in range(1001)]}, "1000"),
    ):
        assert_error(await shop.post("/v1/items", body), 400, "INVALID_ARGUMENT", says)
    assert await attributes(shop, "i1") == before  # nothing half-applied


@session_loop
async def test_the_items_api_over_grpc(shop: Gateway) -> None:
    attrs = struct_pb2.Struct()
    attrs.update({"category": "c97", "available": True})
    written = await shop.stub.UpsertItems(
        catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(item_id="g-1", attributes=attrs)])
    )
    assert written.upserted == 1 and written.catalog_seq > 0
    got = await shop.stub.GetItem(catalog_pb2.GetItemRequest(item_id="g-1"))
    assert dict(got.item.attributes) == {"category": "c97", "available": True} and not got.known_to_model
    bad = struct_pb2.Struct()
    bad.update({"available": "yes"})
    with pytest.raises(Exception) as info:
        await shop.stub.UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(item_id="g-1", attributes=bad)])
        )
    assert info.value.code().name == "INVALID_ARGUMENT" and "boolean" in info.value.details()  # type: ignore[attr-defined]
    deleted = await shop.stub.DeleteItems(catalog_pb2.DeleteItemsRequest(item_ids=["g-1", "never-there"]))
    assert deleted.deleted == 1


# ------------------------------------------------------------------------------------------------- filters
@session_loop
async def test_a_filtered_answer_holds_only_passing_items_and_fills_k(
    shop: Gateway, bundle_path: Path, session_items: list[str]
) -> None:
    category = common_value(bundle_path, "category")
    expression = f'category == "{category}" and price < 100'
    answer = await recommend(shop, session_items, k=20, filter=expression)
    assert len(answer["items"]) == 20
    for item in ids(answer):
        a = await attributes(shop, item)
        assert a["category"] == category and a["price"] < 100, (item, a)
    grpc_answer = await shop.stub.Recommend(
        pb.RecommendRequest(
            session_item_ids=session_items, k=20, options=pb.RecommendOptions(filter=expression, budget_ms=5000)
        )
    )
    assert [i.item_id for i in grpc_answer.items] == ids(answer)


@session_loop
async def test_strict_returns_what_passes_relaxed_fills_with_popular(shop: Gateway, session_items: list[str]) -> None:
    """A covisit-only recipe finds few items of a rare brand: strict answers fewer than k, relaxed fills k with
    popular items of that brand and says how many."""
    few = 'brand == "' + (await attributes(shop, session_items[0]))["brand"] + '"'
    strict = await recommend(shop, session_items, k=10, filter=few, filter_strict=True, sources="covisit:20")
    relaxed = await recommend(shop, session_items, k=10, filter=few, sources="covisit:20")
    assert len(relaxed["items"]) >= len(strict["items"])
    assert relaxed["filled_from_popular"] == len(relaxed["items"]) - len(strict["items"])
    assert strict["filled_from_popular"] == 0
    for item in ids(relaxed):
        assert (await attributes(shop, item))["brand"] == few.split('"')[1]


@session_loop
async def test_an_unavailable_item_disappears_from_the_next_answer(shop: Gateway, session_items: list[str]) -> None:
    first = ids(await recommend(shop, session_items))
    hidden = first[0]
    await shop.http.patch(f"/v1/items/{hidden}", json={"attributes": {"available": False}})
    try:
        assert hidden not in ids(await recommend(shop, session_items))
        assert hidden not in ids(await recommend(shop, [], k=200))  # nor among popular items
        grpc_answer = await shop.stub.Recommend(pb.RecommendRequest(session_item_ids=session_items))
        assert hidden not in [i.item_id for i in grpc_answer.items]
    finally:
        await shop.http.patch(f"/v1/items/{hidden}", json={"attributes": {"available": True}})
    assert ids(await recommend(shop, session_items)) == first


@session_loop
async def test_cold_start_answers_popular_items_that_pass_the_filter(shop: Gateway, bundle_path: Path) -> None:
    category = common_value(bundle_path, "category")
    answer = await recommend(shop, [], k=5, filter=f'category == "{category}"')
    assert len(answer["items"]) == 5
    for item in ids(answer):
        assert (await attributes(shop, item))["category"] == category
    grpc_answer = await shop.stub.Recommend(pb.RecommendRequest(k=5))
    assert len(grpc_answer.items) == 5


# -------------------------------------------------------------------------------------- rules and diversity
@session_loop
async def test_a_pinned_item_sits_at_its_position(shop: Gateway, session_items: list[str]) -> None:
    plain = ids(await recommend(shop, session_items))
    answer = await recommend(
        shop, session_items, pins=[{"item_id": plain[7], "position": 2}, {"item_id": "i3", "position": 5}]
    )
    got = ids(answer)
    assert got[1] == plain[7] and got[4] == "i3" and len(got) == 10


@session_loop
async def test_the_diversity_cap_holds(shop: Gateway, session_items: list[str]) -> None:
    answer = await recommend(shop, session_items, k=10, diversity={"attribute": "category", "max_per_value": 2})
    categories = [(await attributes(shop, item)).get("category") for item in ids(answer)]
    assert len(categories) == 10
    assert not answer["diversity_relaxed"]
    assert max(categories.count(c) for c in set(categories)) <= 2, categories


@session_loop
async def test_a_bury_rule_moves_items_down_and_an_include_brings_a_new_item(
    shop: Gateway, session_items: list[str]
) -> None:
    plain = ids(await recommend(shop, session_items))
    top_brand = (await attributes(shop, plain[0]))["brand"]
    buried = await recommend(
        shop, session_items, explain=True, boosts=[{"filter": f'brand == "{top_brand}"', "multiply": 0.0}]
    )
    # score x 0: the brand sinks below every other candidate of the pool (200), so none is left in the top 10
    for item in ids(buried):
        assert (await attributes(shop, item))["brand"] != top_brand
    assert plain[0] not in ids(buried)
    await shop.http.put("/v1/items/brand-new", json={"attributes": {"collection": "spring", "available": True}})
    promoted = await recommend(
        shop,
        session_items,
        explain=True,
        boosts=[{"filter": 'collection == "spring"', "include": 1, "add": 10, "name": "spring"}],
    )
    assert ids(promoted)[0] == "brand-new"
    explanation = promoted["explanations"][0]
    assert explanation["sources"] == ["rule"] and "spring:include" in explanation["rules"]


@session_loop
async def test_explanations_sum_to_the_rankers_logit(shop: Gateway, session_items: list[str]) -> None:
    answer = await recommend(shop, session_items, explain=True, sources="ann:100,covisit:50")
    assert len(answer["explanations"]) == len(answer["items"])
    for item, e in zip(answer["items"], answer["explanations"], strict=True):
        assert e["item_id"] == item["item_id"]
        assert set(e["sources"]) <= {"ann", "covisit"} and e["sources"]
        total = e["intercept"] + sum(c["value"] for c in e["contributions"]) + e["other"]
        assert total == pytest.approx(e["logit"], abs=1e-6)
        p = item["score"]  # the ranker's probability, float32 on the wire
        assert e["logit"] == pytest.approx(math.log(p / (1 - p)), abs=1e-3)
        assert len(e["contributions"]) == 5
    grpc_answer = await shop.stub.Recommend(
        pb.RecommendRequest(session_item_ids=session_items, options=pb.RecommendOptions(explain=True, budget_ms=5000))
    )
    assert len(grpc_answer.explanations) == len(grpc_answer.items)
    first = grpc_answer.explanations[0]
    assert first.intercept + sum(c.value for c in first.contributions) + first.other == pytest.approx(first.logit)
