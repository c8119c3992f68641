"""The whole stack as a user runs it (`recmesh up`): real processes, a real Redis, REST and gRPC over loopback.

One stack for the module (two ranking replicas); the tests that take parts down run last, in file order.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from devtools.stack import LocalStack
from recmesh.catalog.files import load_catalog
from recmesh.catalog.masks import allowed_items
from recmesh.catalog.table import Catalog
from recmesh.pipeline import load_model
from recmesh.publish import publish
from recmesh.v1 import candidate_generation_service_pb2 as candidates_pb
from recmesh.v1 import candidate_generation_service_pb2_grpc as candidates_grpc
from recmesh.v1 import catalog_pb2 as catalog_pb
from recmesh.v1 import ranking_service_pb2 as ranking_pb
from recmesh.v1 import ranking_service_pb2_grpc as ranking_grpc
from recmesh.v1 import recommendation_service_pb2 as pb
from recmesh.v1 import recommendation_service_pb2_grpc as pb_grpc
from serving.vectors import pack
from tests.helpers import sample_sessions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack_models(bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A private models dir holding only the fixture bundle (the publish test adds another model)."""
    models = tmp_path_factory.mktemp("stack-models")
    shutil.copytree(bundle_path, models / bundle_path.name)
    return models, bundle_path.name


@pytest.fixture(scope="module")
def stack(stack_models: tuple[Path, str]):  # type: ignore[no-untyped-def]
    with LocalStack(stack_models[0], replicas={"ranking": 2, "candidate_generation": 2}) as running:
        yield running


def post(stack: LocalStack, path: str, body: dict, method: str = "POST") -> tuple[int, dict, dict[str, str]]:
    request = urllib.request.Request(
        stack.http_url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


class Flow:
    """Answers of recommendation requests a background thread sends one after another: (index of the session in
    ``sessions``, status, answer), in the order they came back."""

    def __init__(self, sessions: list[list[str]]) -> None:
        self.sessions = sessions
        self.results: list[tuple[int, int, dict]] = []
        self.lock = threading.Condition()  # held while results change

    def add(self, result: tuple[int, int, dict]) -> None:
        with self.lock:
            self.results.append(result)
            self.lock.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[int, int, dict]]], bool], timeout: float = 15) -> bool:
        """Until ``predicate(results)`` holds (True), or ``timeout`` s have passed (False)."""
        with self.lock:
            return self.lock.wait_for(lambda: predicate(self.results), timeout)


@contextlib.contextmanager
def recommendations_flowing(stack: LocalStack, k: int) -> Iterator[Flow]:
    """While the block runs, a background thread sends the first 20 training sessions as recommendation
    requests, one after another, again and again; the yielded Flow collects the answers."""
    flow = Flow(sample_sessions(20))
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for i, session in enumerate(flow.sessions):
                status, answer, _ = post(stack, "/v1/recommend", {"session": session, "k": k})
                flow.add((i, status, answer))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        yield flow
    finally:
        stop.set()
        worker.join()


def ids(answer: dict) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


@pytest.fixture(scope="module")
def catalog(bundle_path: Path) -> Catalog:
    """The live catalogue as publish seeded it: the bundle's (the synthetic attributes, a few items unavailable)."""
    found = load_catalog(bundle_path)
    assert found is not None
    return found


def offline(model, session: list[str], catalog: Catalog, k: int = 10) -> list[str]:  # type: ignore[no-untyped-def]
    """The offline pipeline with the bundle's default recipe, under the catalogue: no unavailable item."""
    history, _ = model.recent_known(session)
    rows, _ = model.recommend(history, k, allowed=allowed_items(catalog, model.item_ids))
    return [model.item_ids[i] for i in rows]


def test_a_filter_works_from_the_first_request(stack: LocalStack, catalog: Catalog):
    """The gateway and candidate generation read the whole live catalogue (publish seeded it) before serving: the
    stack's first filtered request is answered, with only items that pass."""
    session = sample_sessions(1)[0]
    category = catalog.get(session[-1])["category"]  # type: ignore[index]
    body = {"session": session, "k": 10, "options": {"filter": f"category == {json.dumps(category)}"}}
    status, answer, _ = post(stack, "/v1/recommend", body)
    assert status == 200 and not answer["degraded"], answer
    assert len(ids(answer)) == 10
    assert {catalog.get(item)["category"] for item in ids(answer)} == {category}  # type: ignore[index]


def test_rest_recommendation_equals_the_offline_pipeline(stack: LocalStack, model, catalog):  # type: ignore[no-untyped-def]
    for session in sample_sessions(8):
        status, answer, headers = post(stack, "/v1/recommend", {"session": session[:-1], "k": 10})
        assert status == 200, answer
        assert not answer["degraded"], answer["degradations"]
        assert answer["model_version"] == model.version
        assert ids(answer) == offline(model, session[:-1], catalog)
        assert "ranking;dur=" in headers["server-timing"]


def test_grpc_recommendation_equals_rest_and_reports_timings(stack: LocalStack, model, catalog):  # type: ignore[no-untyped-def]
    session = sample_sessions(1)[0]
    with grpc.insecure_channel(stack.grpc_address) as channel:
        reply, call = pb_grpc.RecommendationServiceStub(channel).Recommend.with_call(
            pb.RecommendRequest(session_item_ids=session, k=10), timeout=5
        )
    assert [item.item_id for item in reply.items] == offline(model, session, catalog)
    trailing = dict(call.trailing_metadata())
    assert "embeddings;dur=" in trailing["server-timing"]


def test_an_unavailable_item_leaves_the_next_answer_of_every_replica(stack: LocalStack, model, catalog):  # type: ignore[no-untyped-def]
    """Two candidate-generation processes (round robin): marked unavailable, an item is gone from the very next
    answer whichever replica serves it, REST and gRPC; available again, it is back."""
    session = sample_sessions(1)[0]
    status, answer, _ = post(stack, "/v1/recommend", {"session": session, "k": 10})
    assert status == 200 and not answer["degraded"], answer
    hidden = ids(answer)[0]
    status, _, _ = post(stack, f"/v1/items/{hidden}", {"attributes": {"available": False}}, method="PATCH")
    assert status == 200
    try:
        for _ in range(6):  # both replicas answer several times each
            status, answer, _ = post(stack, "/v1/recommend", {"session": session, "k": 10})
            assert status == 200 and hidden not in ids(answer) and len(ids(answer)) == 10, answer
        with grpc.insecure_channel(stack.grpc_address) as channel:
            stub = pb_grpc.RecommendationServiceStub(channel)
            for _ in range(4):
                reply = stub.Recommend(pb.RecommendRequest(session_item_ids=session, k=10), timeout=5)
                assert hidden not in [item.item_id for item in reply.items]
    finally:
        post(stack, f"/v1/items/{hidden}", {"attributes": {"available": True}}, method="PATCH")
    status, answer, _ = post(stack, "/v1/recommend", {"session": session, "k": 10})
    assert ids(answer) == offline(model, session, catalog)


def test_rules_and_explanations_through_the_whole_stack_in_both_protocols(stack: LocalStack, catalog: Catalog):
    """A boost, a diversity cap, a pin and explanations in one request, REST and gRPC alike, real processes."""
    session = sample_sessions(2)[1]
    options = {
        "boosts": [{"filter": "price < 20", "multiply": 1.5, "name": "cheap"}],
        "diversity": {"attribute": "brand", "max_per_value": 1},
        "pins": [{"item_id": "i7", "position": 3}],
        "explain": True,
    }
    status, answer, _ = post(stack, "/v1/recommend", {"session": session, "k": 10, "options": options})
    assert status == 200 and not answer["degraded"], answer
    got = ids(answer)
    assert len(got) == 10 and got[2] == "i7"
    brands = [catalog.get(item)["brand"] for item in got if item != "i7"]  # type: ignore[index]
    assert len(brands) == len(set(brands))  # one per brand (the pin may repeat one)
    for e in answer["explanations"]:
        assert e["intercept"] + sum(c["value"] for c in e["contributions"]) + e["other"] == pytest.approx(e["logit"])
    assert "pin" in answer["explanations"][2]["rules"]
    request = pb.RecommendRequest(
        session_item_ids=session,
        k=10,
        options=pb.RecommendOptions(
            boosts=[catalog_pb.Boost(filter="price < 20", multiply=1.5, name="cheap")],
            diversity=catalog_pb.Diversity(attribute="brand", max_per_value=1),
            pins=[catalog_pb.Pin(item_id="i7", position=3)],
            explain=True,
        ),
    )
    with grpc.insecure_channel(stack.grpc_address) as channel:
        reply = pb_grpc.RecommendationServiceStub(channel).Recommend(request, timeout=5)
    assert [item.item_id for item in reply.items] == got
    assert [list(e.rules) for e in reply.explanations] == [e["rules"] for e in answer["explanations"]]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_requests_are_spread_over_both_ranking_replicas(stack: LocalStack):
    replicas = stack.by_name("ranking")
    assert len(replicas) == 2
    before = [_cpu_ticks(p.popen.pid) for p in replicas]
    sessions = sample_sessions(50)
    for _ in range(4):
        for session in sessions:
            assert post(stack, "/v1/recommend", {"session": session, "k": 10})[0] == 200
    used = [_cpu_ticks(p.popen.pid) - b for p, b in zip(replicas, before, strict=True)]
    assert min(used) > 0 and min(used) > 0.2 * max(used), f"CPU ticks per replica: {used}"


def current_versions(stack: LocalStack) -> set[str]:
    """The versions the candidate-generation and ranking replicas serve a request that names none (their current)."""
    item = sample_sessions(1)[0][0]
    versions = set()
    for process in stack.by_name("candidate_generation") + stack.by_name("ranking"):
        with grpc.insecure_channel(process.address) as channel:
            if process.name.startswith("ranking"):
                request = ranking_pb.RankRequest(
                    session_item_ids=[item], candidate_ids=[item], candidate_scores=pack([1])
                )
                reply = ranking_grpc.RankingServiceStub(channel).Rank(request, timeout=5)
            else:
                request = candidates_pb.RetrieveCandidatesRequest(item_ids=[item], k=1)
                reply = candidates_grpc.CandidateGenerationServiceStub(channel).RetrieveCandidates(request, timeout=5)
        versions.add(reply.model_version)
    return versions


@pytest.fixture(scope="module")
def reseeded_bundle(bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same data: the `models_dir` fixture's training (tests/conftest.py: same synthetic
    data, epochs, candidate count) with another word2vec seed, so other vectors, index and ranker. ~1 s."""
    from recmesh.data.synth import generate
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams, train_bundle

    params = TrainParams(word2vec=Word2VecParams(epochs=10, seed=7), candidates=150)
    out = tmp_path_factory.mktemp("reseeded")
    path = train_bundle(generate(n_items=2000, n_users=3000, seed=1), out, params, progress=False)
    assert path.name > bundle_path.name  # trained later: the newer version
    return path


def test_publish_of_another_model_while_requests_flow_gives_every_answer_whole_from_one_version(
    stack: LocalStack,
    stack_models: tuple[Path, str],
    model,  # type: ignore[no-untyped-def]
    reseeded_bundle: Path,
    catalog: Catalog,
):
    """Publishing a genuinely different model mid-load: every answer is exactly the offline pipeline's answer of
    the version it names (so hops 1, 2 and 3 all used that version: vectors, index and ranker of one model), some
    answers come from each version, and none goes back to the old one after the switch."""
    models, old = stack_models
    new = reseeded_bundle.name
    shutil.copytree(reseeded_bundle, models / new)
    offline_by_version = {old: model, new: load_model(models / new)}
    sessions = sample_sessions(20)  # what recommendations_flowing sends
    expected = {v: [offline(m, s, catalog, k=5) for s in sessions] for v, m in offline_by_version.items()}
    disagree = sum(a != b for a, b in zip(expected[old], expected[new], strict=True))
    # Enough answers differ to tell the versions apart (both draw covisit candidates from tables of the same data,
    # so they agree more than two ANN-only models did: 9-12 of 20 seen differ; word2vec's threads vary it).
    assert disagree >= len(sessions) // 4, f"the two models agree on {len(sessions) - disagree} of {len(sessions)}"
    # On disk but not published: not pinnable, and no request makes a process load it (recmesh.registry).
    pinned = {"session": sessions[0], "k": 5, "model_version": new, "options": {"budget_ms": 10_000}}
    status, answer, _ = post(stack, "/v1/recommend", pinned)
    assert status == 404 and "cannot be pinned here" in json.dumps(answer), answer

    def answers_of(version: str, n: int) -> Callable[[list[tuple[int, int, dict]]], bool]:
        return lambda results: sum(answer.get("model_version") == version for _, _, answer in results) >= n

    with recommendations_flowing(stack, k=5) as flowing:
        # The pointer (<models dir>/PUBLISHED) still names the old version: the newer bundle on disk is not served.
        time.sleep(2.5)  # longer than the registries' 2 s look at the pointer
        assert current_versions(stack) == {old}
        with flowing.lock:
            before = sum(answer.get("model_version") == old for _, _, answer in flowing.results)
        assert flowing.wait_for(answers_of(old, before + 20)), "no answers pinned to the old version meanwhile"
        publish(models / new, stack.redis_url, progress=False)
        assert flowing.wait_for(answers_of(new, 20)), "the published version was never served"

    versions = []
    for i, status, answer in flowing.results:
        assert status == 200 and not answer["degraded"], answer
        equals = {v for v in expected if ids(answer) == expected[v][i]}
        assert answer["model_version"] in equals, (
            f"session {i}: answer of {answer['model_version']!r} equals the offline answer of {sorted(equals)}"
        )
        versions.append(answer["model_version"])
    assert versions[0] == old and versions[-1] == new
    switch = versions.index(new)
    assert set(versions[switch:]) == {new}, "a request went back to the old version after the switch"
    # After the flip both are pinnable (current and previous): a rollout's requests in flight finish.
    for version in (old, new):
        status, answer, _ = post(stack, "/v1/recommend", {**pinned, "model_version": version})
        assert status == 200 and answer["model_version"] == version and ids(answer) == expected[version][0], answer


def test_ranking_replica_killed_under_load_fails_no_request_and_rejoins_after_restart(stack: LocalStack):
    """SIGKILL mid-load (in-flight calls are reset): the gateway's retry on UNAVAILABLE and round robin over the
    live replica keep every answer whole; the restarted replica (same address) gets traffic again."""
    victim, survivor = stack.by_name("ranking")
    with recommendations_flowing(stack, k=10) as flowing:
        assert flowing.wait_for(lambda results: len(results) >= 20), "no answers before the kill"
        stack.kill(victim)
        killed_at = len(flowing.results)
        assert flowing.wait_for(lambda results: len(results) >= killed_at + 100), "no answers after the kill"
    results = [(status, bool(answer.get("degraded"))) for _, status, answer in flowing.results]
    assert killed_at > 0 and len(results) > killed_at, "no request before or after the kill"
    assert all(status == 200 and not degraded for status, degraded in results), [
        r for r in results if r != (200, False)
    ][:3]

    stack.restart(victim)
    before = [_cpu_ticks(p.popen.pid) for p in (victim, survivor)]
    deadline = time.monotonic() + 20  # the gateway reconnects with gRPC's backoff (1 s, growing)
    while time.monotonic() < deadline:
        for session in sample_sessions(20):
            assert post(stack, "/v1/recommend", {"session": session, "k": 10})[0] == 200
        used = [_cpu_ticks(p.popen.pid) - b for p, b in zip((victim, survivor), before, strict=True)]
        if used[0] > 0.2 * used[1] > 0:
            break
    assert used[0] > 0.2 * used[1] > 0, f"CPU ticks (restarted, survivor): {used}"


def test_redis_down_serves_vectors_from_the_bundle_marked_degraded(stack: LocalStack, model):  # type: ignore[no-untyped-def]
    stack.redis_server("cache").stop()  # the vector cache (the store holds events and the version pointer)
    never_asked = model.item_ids[-5:]  # rare items no earlier request asked for: LRU misses
    status, answer, _ = post(stack, "/v1/recommend", {"session": never_asked, "k": 10})
    assert status == 200 and answer["items"]
    assert answer["degraded"]
    assert any(d["stage"] == "embeddings" and "redis" in d["reason"] for d in answer["degradations"])


def test_all_ranking_down_returns_retrieval_order_marked_degraded(stack: LocalStack):
    for replica in stack.by_name("ranking"):
        replica.stop()
    session = sample_sessions(1)[0]
    status, answer, _ = post(stack, "/v1/recommend", {"session": session, "k": 10})
    _, unranked, _ = post(stack, "/v1/recommend", {"session": session, "k": 10, "options": {"skip_ranking": True}})
    assert status == 200
    assert answer["degraded"] and any(d["stage"] == "ranking" for d in answer["degradations"])
    assert ids(answer) == ids(unranked)
    np.testing.assert_array_equal([i["score"] for i in answer["items"]], [i["score"] for i in unranked["items"]])
