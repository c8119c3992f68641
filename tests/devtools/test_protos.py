from devtools import protos
from recmesh.v1 import common_pb2, recommendation_service_pb2


def test_committed_stubs_match_protos():
    assert protos.check() == []


def test_recommend_request_round_trip():
    request = recommendation_service_pb2.RecommendRequest(
        session_item_ids=["a", "b", "c"],
        user_id="u1",
        k=20,
        options=recommendation_service_pb2.RecommendOptions(
            skip_ranking=True,
            candidate_count=300,
            exclude_item_ids=["x"],
            budget_ms=50,
            query_vector=b"\x00\x00\x80?" * 4,
            include_seen=True,
        ),
        model_version="v3",
    )
    decoded = recommendation_service_pb2.RecommendRequest.FromString(request.SerializeToString())
    assert decoded == request
    assert list(decoded.session_item_ids) == ["a", "b", "c"]
    assert decoded.options.budget_ms == 50


def test_enums_start_at_unspecified():
    assert common_pb2.EventType.Name(0) == "EVENT_TYPE_UNSPECIFIED"
    assert common_pb2.Event().type == common_pb2.EVENT_TYPE_UNSPECIFIED


def test_gateway_service_methods():
    service = recommendation_service_pb2.DESCRIPTOR.services_by_name["RecommendationService"]
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {
        "Recommend",
        "GetItemEmbeddings",
        "GetSimilarItems",
        "FindCandidates",
        "RankCandidates",
        "RecordEvent",
        "RecordEvents",
        "UpsertItems",
        "GetItem",
        "DeleteItems",
    }
    assert methods["RecordEvents"].client_streaming
    assert not methods["RecordEvents"].server_streaming
