"""The gateway's gRPC server: proto3 defaults (0 = the default), bad input as INVALID_ARGUMENT with the request id
and google.rpc.BadRequest field violations in the trailers, values over a cap refused as over REST, and health and
reflection served alongside."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from gateway.grpc_api import SERVICE_NAME
from recmesh.v1 import recommendation_service_pb2
from serving import errors, limits
from tests.gateway.harness import Gateway

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2


@session_loop
async def test_grpc_bad_input_is_invalid_argument_and_caps_apply(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    stub = gateway.stub
    for request in (
        pb.RecommendRequest(options=pb.RecommendOptions(filter="price <")),
        pb.RecommendRequest(session_item_ids=["a"], k=-1),
        pb.RecommendRequest(options=pb.RecommendOptions(query_vector=b"\x00\x00\x80?")),
        pb.RecommendRequest(options=pb.RecommendOptions(query_vector=b"\x00\x00")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recommend(request, timeout=5, metadata=(("x-request-id", "bad-1"),))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details()
        assert dict(info.value.trailing_metadata())["x-request-id"] == "bad-1"
    # Above the cap is refused, as over REST (it used to be capped silently).
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Recommend(pb.RecommendRequest(session_item_ids=session_items, k=5000), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"between 1 and {limits.MAX_K}" in info.value.details()
    default = await stub.Recommend(pb.RecommendRequest(session_item_ids=session_items), timeout=5)
    assert len(default.items) == limits.DEFAULT_K


def _options(**options: object) -> pb.RecommendRequest:
    return pb.RecommendRequest(session_item_ids=["a"], options=pb.RecommendOptions(**options))


OVER_THE_CAP = [
    ("candidate_count", _options(candidate_count=limits.MAX_CANDIDATE_COUNT + 1)),
    ("budget_ms", _options(budget_ms=limits.MAX_BUDGET_MS + 1)),
    ("exclude_item_ids", _options(exclude_item_ids=[f"x{i}" for i in range(limits.MAX_EXCLUDE + 1)])),
]


@session_loop
@pytest.mark.parametrize(("field", "request_"), OVER_THE_CAP, ids=[o[0] for o in OVER_THE_CAP])
async def test_grpc_recommend_options_over_their_cap_are_invalid_argument(
    gateway: Gateway, field: str, request_: pb.RecommendRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.Recommend(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()


@session_loop
async def test_grpc_stage_calls_over_their_cap_are_invalid_argument(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    item = model.item_ids[1]
    calls = (
        gateway.stub.GetSimilarItems(pb.GetSimilarItemsRequest(item_id=item, k=limits.MAX_K + 1), timeout=5),
        gateway.stub.FindCandidates(
            pb.FindCandidatesRequest(item_ids=[item], k=limits.CANDIDATES_MAX_K + 1), timeout=5
        ),
        gateway.stub.GetItemEmbeddings(
            pb.GetItemEmbeddingsRequest(item_ids=[item] * (limits.MAX_ITEMS + 1)), timeout=5
        ),
    )
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    similar = await gateway.stub.GetSimilarItems(pb.GetSimilarItemsRequest(item_id=item), timeout=5)
    assert len(similar.items) == limits.DEFAULT_K  # 0 = the default
    found = await gateway.stub.FindCandidates(pb.FindCandidatesRequest(item_ids=[item]), timeout=5)
    assert len(found.candidates) == limits.CANDIDATES_DEFAULT_K


@session_loop
async def test_gateway_grpc_server_has_health_and_reflection(gateway: Gateway) -> None:
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for name in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    names = set()
    async for reply in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
        names |= {s.name for s in reply.list_services_response.service}
    assert SERVICE_NAME in names


@session_loop
async def test_invalid_argument_names_the_field_in_bad_request_details_beside_the_request_id(gateway: Gateway) -> None:
    request = pb.RecommendRequest(session_item_ids=["a"], options=pb.RecommendOptions(budget_ms=10**6))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.Recommend(request, timeout=5, metadata=(("x-request-id", "bad-2"),))
    assert dict(info.value.trailing_metadata())["x-request-id"] == "bad-2"  # the handler's trailer is kept
    status = rpc_status.from_call(info.value)  # what any gRPC client library decodes
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("options.budget_ms", info.value.details())]


@session_loop
async def test_a_stages_field_violations_pass_through_the_gateway(gateway: Gateway) -> None:
    """The gateway checks input before its hops; a stage that refuses it all the same names its fields too."""
    with pytest.raises(errors.InvalidArgument) as info:
        await gateway.app.state.core.clients.embeddings.get_embeddings([], timeout_s=5)
    assert info.value.violations == (errors.FieldViolation("item_ids", "item_ids must not be empty"),)
