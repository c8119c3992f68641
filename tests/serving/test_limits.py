"""serving/limits.py, the proto comments and the REST OpenAPI document state the same defaults and caps, and a value
over a cap is INVALID_ARGUMENT over gRPC and REST alike, with the same message naming the range."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
import pytest_asyncio

from devtools.stack import free_port
from gateway.app import create_app
from gateway.clients import Clients
from gateway.grpc_api import create_grpc_server
from gateway.settings import Settings
from recmesh.v1 import recommendation_service_pb2, recommendation_service_pb2_grpc
from serving import errors, limits

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "recmesh" / "v1"
pb = recommendation_service_pb2


# ------------------------------------------------------------------------------------------------ the documents
def proto_comment(message: str, field: str, proto: str = "recommendation_service.proto") -> str:
    """The comment lines right above ``field`` in ``message``, joined into one line."""
    text = (PROTOS / proto).read_text()
    body = re.search(rf"^message {message} {{\n(.*?)^}}", text, re.S | re.M)
    assert body, f"no message {message} in {proto}"
    lines = body.group(1).splitlines()
    index = next(i for i, line in enumerate(lines) if re.match(rf"\s*(repeated\s+)?\w+ {field} = \d+;", line))
    comment: list[str] = []
    for line in reversed(lines[:index]):
        if not line.strip().startswith("//"):
            break
        comment.insert(0, line.strip().removeprefix("//").strip())
    return " ".join(comment)


def rpc_comment(rpc: str) -> str:
    text = (PROTOS / "recommendation_service.proto").read_text()
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"rpc {rpc}("))
    comment: list[str] = []
    for line in reversed(lines[:index]):
        if not line.strip().startswith("//"):
            break
        comment.insert(0, line.strip().removeprefix("//").strip())
    return " ".join(comment)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(Settings(AUTH="disabled")).openapi()  # type: ignore[no-any-return]


def body_field(spec: dict[str, Any], schema: str, field: str) -> dict[str, Any]:
    return spec["components"]["schemas"][schema]["properties"][field]  # type: ignore[no-any-return]


def query_parameter(spec: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    parameters = spec["paths"][path]["get"]["parameters"]
    return next(p["schema"] for p in parameters if p["name"] == name)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Capped:
    """A capped field of the public API: where the proto and the OpenAPI document state it."""

    message: str
    field: str
    openapi: tuple[str, str]  # (schema, property), or ("GET <path>", query parameter)
    cap: int
    default: int | None = None  # None: a list, whose default is empty

    def schema(self, spec: dict[str, Any]) -> dict[str, Any]:
        where, name = self.openapi
        if where.startswith("GET "):
            return query_parameter(spec, where.removeprefix("GET "), name)
        return body_field(spec, where, name)


CAPPED = [
    Capped("RecommendRequest", "k", ("RecommendIn", "k"), limits.MAX_K, limits.DEFAULT_K),
    Capped(
        "RecommendOptions",
        "candidate_count",
        ("RecommendOptionsIn", "candidate_count"),
        limits.MAX_CANDIDATE_COUNT,
        limits.DEFAULT_CANDIDATE_COUNT,
    ),
    Capped("RecommendOptions", "exclude_item_ids", ("RecommendOptionsIn", "exclude_item_ids"), limits.MAX_EXCLUDE),
    Capped(
        "RecommendOptions",
        "budget_ms",
        ("RecommendOptionsIn", "budget_ms"),
        limits.MAX_BUDGET_MS,
        limits.DEFAULT_BUDGET_MS,
    ),
    Capped("GetItemEmbeddingsRequest", "item_ids", ("EmbeddingsIn", "item_ids"), limits.MAX_ITEMS),
    Capped("GetSimilarItemsRequest", "k", ("GET /v1/items/{item_id}/similar", "k"), limits.MAX_K, limits.DEFAULT_K),
    Capped("FindCandidatesRequest", "item_ids", ("CandidatesIn", "item_ids"), limits.MAX_ITEMS),
    Capped("FindCandidatesRequest", "k", ("CandidatesIn", "k"), limits.CANDIDATES_MAX_K, limits.CANDIDATES_DEFAULT_K),
    Capped("FindCandidatesRequest", "exclude_item_ids", ("CandidatesIn", "exclude_item_ids"), limits.MAX_EXCLUDE),
    Capped("RankCandidatesRequest", "candidates", ("RankIn", "candidates"), limits.MAX_ITEMS),
    Capped("RankCandidatesRequest", "k", ("RankIn", "k"), limits.RANK_MAX_K, 0),
    Capped("RecommendRequest", "session_item_ids", ("RecommendIn", "session"), limits.MAX_SESSION_ITEMS),
    Capped("RankCandidatesRequest", "session_item_ids", ("RankIn", "session"), limits.MAX_SESSION_ITEMS),
]


@pytest.mark.parametrize("capped", CAPPED, ids=[f"{c.message}.{c.field}" for c in CAPPED])
def test_the_proto_and_the_openapi_document_state_the_cap_and_default_of_limits(
    capped: Capped, openapi: dict[str, Any]
) -> None:
    comment = proto_comment(capped.message, capped.field)
    assert f"at most {capped.cap} (more is invalid_argument)" in comment.lower(), comment
    assert "capped" not in comment  # nothing is capped silently any more
    schema = capped.schema(openapi)
    bound = "maximum" if capped.default is not None else "maxItems"
    assert schema[bound] == capped.cap, schema
    if capped.default is None:
        return
    # proto3: 0 means the default; k of RankCandidates is the one whose default, 0, means "all".
    assert f"default {capped.default}" in comment or (capped.default == 0 and "0 = return all" in comment), comment
    documented = schema.get("default")
    if documented is None:  # None over REST = the gateway's own default, which the description names
        assert str(capped.default) in re.findall(r"\d+", schema["description"]), schema
    else:
        assert documented == capped.default, schema


def test_event_caps_and_id_lengths_agree(openapi: dict[str, Any]) -> None:
    events = body_field(openapi, "EventsIn", "events")
    assert events["maxItems"] == limits.MAX_EVENTS_PER_CALL and str(limits.MAX_EVENTS_PER_CALL) in events["description"]
    assert f"At most {limits.MAX_EVENTS_PER_STREAM} events per stream (more is INVALID_ARGUMENT)" in rpc_comment(
        "RecordEvents"
    )
    for field in ("user_id", "item_id", "session_id"):
        assert body_field(openapi, "EventIn", field)["maxLength"] == limits.MAX_ID_LEN
        assert f"at most {limits.MAX_ID_LEN} characters" in proto_comment("Event", field, "common.proto")
    assert body_field(openapi, "EventIn", "type")["enum"] == list(limits.EVENT_TYPES)
    assert body_field(openapi, "RecommendIn", "session")["items"]["maxLength"] == limits.MAX_ID_LEN
    assert body_field(openapi, "RecommendIn", "model_version")["maxLength"] == limits.MAX_VERSION_LEN
    service = " ".join((PROTOS / "recommendation_service.proto").read_text().replace("//", "").split())
    assert f"Ids are at most {limits.MAX_ID_LEN} characters, model versions at most {limits.MAX_VERSION_LEN}" in service


def test_the_session_and_the_query_by_items_say_what_the_code_does(openapi: dict[str, Any]) -> None:
    assert f"most recent {limits.MAX_SESSION} are" in proto_comment("RecommendRequest", "session_item_ids")
    assert f"most recent {limits.MAX_SESSION} are" in body_field(openapi, "RecommendIn", "session")["description"]
    by_items = proto_comment("FindCandidatesRequest", "item_ids")
    assert "recency-weighted sum of their unit vectors (normalised)" in by_items and "mean" not in by_items
    query_vector = body_field(openapi, "RecommendOptionsIn", "query_vector")
    assert query_vector["maxItems"] == limits.MAX_QUERY_DIM


# ------------------------------------------------------------------------------------------------ behaviour
@dataclass
class Front:
    """The gateway's two faces; nothing behind them (a value out of range never reaches a backend)."""

    http: httpx.AsyncClient
    stub: recommendation_service_pb2_grpc.RecommendationServiceStub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def front(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Front]:
    nowhere = f"127.0.0.1:{free_port()}"
    settings = Settings(
        RECMESH_MODELS_DIR=str(tmp_path_factory.mktemp("no-models")),
        REDIS_URL=f"redis://{nowhere}/0",
        EMBEDDING_STORE_ADDR=nowhere,
        CANDIDATE_GENERATION_ADDR=nowhere,
        RANKING_ADDR=nowhere,
        AUTH="disabled",  # limits are under test here, not keys (tests/gateway/test_auth.py)
    )
    clients = Clients.open(settings)
    app = create_app(settings, clients=clients)
    server, port, _ = await create_grpc_server(app.state.core, "127.0.0.1:0", authenticator=app.state.auth)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            yield Front(http, recommendation_service_pb2_grpc.RecommendationServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(None)
        await clients.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_k_over_the_cap_is_invalid_argument_over_grpc_and_rest_alike(front: Front) -> None:
    naming_the_range = f"k must be between 1 and {limits.MAX_K}, got 100000"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await front.stub.Recommend(pb.RecommendRequest(session_item_ids=["a"], k=100_000), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == naming_the_range
    assert errors.from_rpc_error(info.value).violations == (errors.FieldViolation("k", naming_the_range),)
    response = await front.http.post("/v1/recommend", json={"session": ["a"], "k": 100_000})
    assert response.status_code == 400
    bad_request = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "k", "description": naming_the_range}],
    }
    assert response.json() == {
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": naming_the_range,
            "details": [bad_request],
            "request_id": response.headers["x-request-id"],
        }
    }


@pytest.mark.asyncio(loop_scope="session")
async def test_every_recommend_cap_gives_one_message_over_both_faces(front: Front) -> None:
    over = {
        "candidate_count": limits.MAX_CANDIDATE_COUNT + 1,
        "budget_ms": limits.MAX_BUDGET_MS + 1,
        "exclude_item_ids": [f"x{i}" for i in range(limits.MAX_EXCLUDE + 1)],
    }
    for name, value in over.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            request = pb.RecommendRequest(session_item_ids=["a"], options=pb.RecommendOptions(**{name: value}))
            await front.stub.Recommend(request, timeout=5)
        response = await front.http.post("/v1/recommend", json={"session": ["a"], "options": {name: value}})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and response.status_code == 400
        assert response.json()["error"]["message"] == info.value.details() and name in info.value.details()
        violations = response.json()["error"]["details"][0]["fieldViolations"]
        assert [v["field"] for v in violations] == [f"options.{name}"]
        assert [v.field for v in errors.from_rpc_error(info.value).violations] == [f"options.{name}"]


def test_the_stage_services_state_the_session_cap_too() -> None:
    comment = proto_comment("RankRequest", "session_item_ids", "ranking_service.proto")
    assert f"at most {limits.MAX_SESSION_ITEMS} (more is invalid_argument)" in comment.lower(), comment


def test_the_openapi_document_states_the_rules_the_server_enforces(openapi: dict[str, Any]) -> None:
    """Strict types (no bool as a number), the timestamp range, a non-empty vector within float32."""
    assert body_field(openapi, "RecommendIn", "k")["type"] == "integer"  # pydantic's strict int: a bool is a 400
    timestamp = body_field(openapi, "EventIn", "timestamp_ms")["anyOf"]
    assert {"type": "integer", "minimum": limits.MIN_TIMESTAMP_MS} in timestamp and {"type": "null"} in timestamp
    assert {"type": "integer", "enum": [0]} in timestamp  # 0 = now
    for schema in ("RecommendOptionsIn", "CandidatesIn"):
        field = body_field(openapi, schema, "query_vector")  # minItems beside anyOf: it constrains arrays only
        vector = next(s for s in field["anyOf"] if s.get("type") == "array")
        assert field["minItems"] == 1 and vector["items"]["maximum"] == limits.MAX_QUERY_SQUARED_NORM
    score = body_field(openapi, "CandidateIn", "score")
    assert score["maximum"] == limits.MAX_SCORE and score["minimum"] == -limits.MAX_SCORE


def test_every_answer_is_documented_with_its_model_not_a_string(openapi: dict[str, Any]) -> None:
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                assert schema and schema != {"type": "string"}, (method, path, status, schema)
