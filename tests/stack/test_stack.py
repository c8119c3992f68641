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
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from devtools.stack import LocalStack
from recmesh.publish import publish
from recmesh.v1 import recommendation_service_pb2 as pb
from recmesh.v1 import recommendation_service_pb2_grpc as pb_grpc
from tests.helpers import sample_sessions, two_version_models_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack_models(bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A private models dir holding only the fixture bundle (the newer copy is added by the publish test)."""
    models = tmp_path_factory.mktemp("stack-models")
    shutil.copytree(bundle_path, models / bundle_path.name)
    return models, bundle_path.name


@pytest.fixture(scope="module")
def stack(stack_models: tuple[Path, str]):  # type: ignore[no-untyped-def]
    with LocalStack(stack_models[0], replicas={"ranking": 2}) as running:
        yield running


def post(stack: LocalStack, path: str, body: dict) -> tuple[int, dict, dict[str, str]]:
    request = urllib.request.Request(
        stack.http_url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


@contextlib.contextmanager
def recommendations_flowing(stack: LocalStack, k: int) -> Iterator[list[tuple[int, dict]]]:
    """While the block runs, a background thread sends recommendation requests one after another; each
    (status, answer) is appended to the yielded list."""
    results: list[tuple[int, dict]] = []
    stop = threading.Event()

    def load() -> None:
        sessions = sample_sessions(20)
        while not stop.is_set():
            for session in sessions:
                status, answer, _ = post(stack, "/v1/recommend", {"session": session, "k": k})
                results.append((status, answer))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        yield results
    finally:
        stop.set()
        worker.join()


def version_or_error(answer: dict) -> str:
    return str(answer.get("model_version", answer.get("error")))


def ids(answer: dict) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


def offline(model, session: list[str], k: int = 10) -> list[str]:  # type: ignore[no-untyped-def]
    history, _ = model.recent_known(session)
    rows, _ = model.recommend(history, k, model.manifest["params"]["candidates"])
    return [model.item_ids[i] for i in rows]


def test_rest_recommendation_equals_the_offline_pipeline(stack: LocalStack, model):  # type: ignore[no-untyped-def]
    for session in sample_sessions(8):
        status, answer, headers = post(stack, "/v1/recommend", {"session": session[:-1], "k": 10})
        assert status == 200, answer
        assert not answer["degraded"], answer["degradations"]
        assert answer["model_version"] == model.version
        assert ids(answer) == offline(model, session[:-1])
        assert "ranking;dur=" in headers["server-timing"]


def test_grpc_recommendation_equals_rest_and_reports_timings(stack: LocalStack, model):  # type: ignore[no-untyped-def]
    session = sample_sessions(1)[0]
    with grpc.insecure_channel(stack.grpc_address) as channel:
        reply, call = pb_grpc.RecommendationServiceStub(channel).Recommend.with_call(
            pb.RecommendRequest(session_item_ids=session, k=10), timeout=5
        )
    assert [item.item_id for item in reply.items] == offline(model, session)
    trailing = dict(call.trailing_metadata())
    assert "embeddings;dur=" in trailing["server-timing"]


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


def test_publish_of_a_new_version_while_requests_flow_fails_none(
    stack: LocalStack, stack_models: tuple[Path, str], bundle_path: Path
):
    models, old = stack_models
    staging = Path(str(models) + "-staging")
    staging.mkdir()
    _, _, new = two_version_models_dir(bundle_path, staging)
    shutil.copytree(staging / new, models / new)
    with recommendations_flowing(stack, k=5) as flowing:
        time.sleep(0.5)
        publish(models / new, stack.redis_url, progress=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (not flowing or version_or_error(flowing[-1][1]) != new):
            time.sleep(0.2)
        time.sleep(0.5)
    results = [(status, version_or_error(answer)) for status, answer in flowing]
    assert results and all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    versions = [version for _, version in results]
    assert versions[0] == old and versions[-1] == new
    switch = versions.index(new)
    assert set(versions[switch:]) == {new}, "a request went back to the old version after the switch"


def test_ranking_replica_killed_under_load_fails_no_request_and_rejoins_after_restart(stack: LocalStack):
    """SIGKILL mid-load (in-flight calls are reset): the gateway's retry on UNAVAILABLE and round robin over the
    live replica keep every answer whole; the restarted replica (same address) gets traffic again."""
    victim, survivor = stack.by_name("ranking")
    with recommendations_flowing(stack, k=10) as flowing:
        time.sleep(0.5)
        stack.kill(victim)
        killed_at = len(flowing)
        time.sleep(1.0)
    results = [(status, bool(answer.get("degraded"))) for status, answer in flowing]
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
    assert stack.redis is not None
    stack.redis.terminate()
    stack.redis.wait()
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
