"""One recommendation traced across every hop: real processes (gateway, three services, Redis) exporting their spans
over OTLP/gRPC to a collector this test runs (tests/otlp_collector.py), switched on by the standard OTEL_* variables.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools.stack import LocalStack
from tests.helpers import sample_sessions
from tests.otlp_collector import Collector, Span

pytestmark = pytest.mark.integration

HOPS = {  # the gateway's client span of each hop -> the service answering it
    "/recmesh.v1.EmbeddingStoreService/GetEmbeddings": "embedding-store",
    "/recmesh.v1.CandidateGenerationService/RetrieveCandidates": "candidate-generation",
    "/recmesh.v1.RankingService/Rank": "ranking",
}


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture(scope="module")
def stack(bundle_path: Path, collector: Collector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    models = tmp_path_factory.mktemp("traced-models")
    shutil.copytree(bundle_path, models / bundle_path.name)
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans reach the collector soon after the request
    }
    with pytest.MonkeyPatch.context() as patch:  # the stack's processes inherit this process' environment
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            patch.delenv(key)
        for key, value in otel.items():
            patch.setenv(key, value)
        with LocalStack(models) as running:
            yield running


def recommend(stack: LocalStack, body: dict, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        stack.http_url + "/v1/recommend",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200
        return dict(json.loads(reply.read()))


def request_span(spans: list[Span], trace_id: str | None = None) -> Span | None:
    """The gateway's server span of a POST /v1/recommend (in ``trace_id``, if given)."""
    for span in spans:
        if (span.service, span.kind, span.name) == ("gateway", "SERVER", "POST /v1/recommend") and (
            trace_id is None or span.trace_id == trace_id
        ):
            return span
    return None


def complete(spans: list[Span], trace_id: str) -> bool:
    """Whether every span the test looks for in ``trace_id`` has arrived: the request's, each hop's client span and
    the server span answering it, and Redis commands of both the gateway and the embedding store."""
    mine = [s for s in spans if s.trace_id == trace_id]
    names = {(s.service, s.kind, s.name) for s in mine}
    hops = all(("gateway", "CLIENT", m) in names and (svc, "SERVER", m) in names for m, svc in HOPS.items())
    redis = {s.service for s in mine if s.attributes.get("db.system") == "redis"}
    return request_span(mine) is not None and hops and {"gateway", "embedding-store"} <= redis


def test_one_trace_holds_the_request_and_its_three_hops(stack: LocalStack, collector: Collector) -> None:
    session = sample_sessions(1)[0][:5]
    answer = recommend(stack, {"user_id": "traced-visitor", "session": session, "k": 5})
    assert not answer["degraded"], answer["degradations"]

    spans = collector.wait_for(lambda spans: (r := request_span(spans)) is not None and complete(spans, r.trace_id))
    root = request_span(spans)
    assert root is not None
    trace = [s for s in spans if s.trace_id == root.trace_id]
    assert root.parent_span_id == ""  # nobody sent a traceparent: the gateway started the trace
    for method, service in HOPS.items():
        (client,) = [s for s in trace if s.kind == "CLIENT" and s.name == method]
        assert client.service == "gateway" and client.parent_span_id == root.span_id
        (server,) = [s for s in trace if s.kind == "SERVER" and s.name == method]
        assert server.service == service and server.parent_span_id == client.span_id
    redis = [s for s in trace if s.attributes.get("db.system") == "redis"]
    gateway_redis = [s for s in redis if s.service == "gateway"]
    assert gateway_redis and all(s.parent_span_id == root.span_id for s in gateway_redis)  # the visitor's LRANGE
    store = next(s for s in trace if s.service == "embedding-store" and s.kind == "SERVER")
    assert any(s.service == "embedding-store" and s.parent_span_id == store.span_id for s in redis)  # the MGET
    # Probes and the version pointer's polling (Redis, every second) make no spans of their own.
    assert not [s for s in spans if "Health" in s.name or s.name.startswith(("GET /readyz", "GET /healthz"))]
    assert not [s for s in spans if s.attributes.get("db.system") == "redis" and not s.parent_span_id]


def test_the_callers_traceparent_is_kept(stack: LocalStack, collector: Collector) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    session = sample_sessions(2)[1][:5]
    recommend(stack, {"session": session, "k": 5}, {"traceparent": f"00-{trace_id}-{parent_id}-01"})

    spans = collector.wait_for(lambda spans: _hops_arrived(spans, trace_id))
    root = request_span(spans, trace_id)
    assert root is not None and root.parent_span_id == parent_id


def _hops_arrived(spans: list[Span], trace_id: str) -> bool:
    mine = {(s.service, s.kind, s.name) for s in spans if s.trace_id == trace_id}
    return request_span(spans, trace_id) is not None and all((svc, "SERVER", m) in mine for m, svc in HOPS.items())


BATCH_OF = {  # each hop's batch RPC (gateway/batching.py): one RPC for the calls that arrived together
    "/recmesh.v1.EmbeddingStoreService/GetEmbeddings": "/recmesh.v1.EmbeddingStoreService/BatchGetEmbeddings",
    "/recmesh.v1.CandidateGenerationService/RetrieveCandidates": (
        "/recmesh.v1.CandidateGenerationService/BatchRetrieveCandidates"
    ),
    "/recmesh.v1.RankingService/Rank": "/recmesh.v1.RankingService/BatchRank",
}


def _descends(span: Span, ancestor: Span, by_id: dict[str, Span]) -> bool:
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        if span.span_id == ancestor.span_id:
            return True
    return False


def _hop_reached(spans: list[Span], root: Span, method: str) -> bool:
    """Whether ``root``'s request reached ``method``'s service, as a call in its own trace, or through a batch
    sent for several requests: in its trace (the first member's) or linked from it (the others')."""
    by_id = {s.span_id: s for s in spans}
    answered = {s.parent_span_id for s in spans if s.kind == "SERVER" and s.name in (method, BATCH_OF[method])}
    for client in spans:
        if client.kind != "CLIENT" or client.name not in (method, BATCH_OF[method]) or client.span_id not in answered:
            continue
        if client.trace_id == root.trace_id and _descends(client, root, by_id):
            return True
        batch = by_id.get(client.parent_span_id)
        if batch is not None and batch.name.endswith(" batch") and (batch.trace_id, batch.span_id) in root.links:
            return True
    return False


def test_concurrent_requests_each_reach_every_hop_directly_or_by_a_batch_link(
    stack: LocalStack, collector: Collector
) -> None:
    """Concurrent calls to a stage go out as one batch RPC: its spans are in one member's trace, and every other
    member's request span links to the batch span (docs/tracing.md). However the calls were batched, no request
    loses a hop."""
    trace_ids = [secrets.token_hex(16) for _ in range(12)]
    sessions = sample_sessions(len(trace_ids))

    def send(i: int) -> None:
        headers = {"traceparent": f"00-{trace_ids[i]}-{secrets.token_hex(8)}-01"}
        recommend(stack, {"session": sessions[i][:5], "k": 5}, headers)

    with ThreadPoolExecutor(len(trace_ids)) as pool:
        list(pool.map(send, range(len(trace_ids))))

    def all_reached(spans: list[Span]) -> bool:
        roots = [request_span(spans, t) for t in trace_ids]
        return all(r is not None and all(_hop_reached(spans, r, m) for m in HOPS) for r in roots)

    collector.wait_for(all_reached, timeout=20)


def test_spans_are_named_by_route_not_by_path(stack: LocalStack, collector: Collector) -> None:
    item = sample_sessions(1)[0][0]
    with urllib.request.urlopen(f"{stack.http_url}/v1/items/{item}/similar?k=3", timeout=5) as reply:
        assert reply.status == 200
    similar = "GET /v1/items/{item_id}/similar"
    spans = collector.wait_for(lambda spans: any(s.name == similar for s in spans))
    assert not [s for s in spans if item in s.name]  # an id in a name would make one name per item
