"""REST errors: every error is {"error": {"code", "status", "message", "details", "request_id"}} with the status
its kind has (400, not 422; 404 and 405 with Allow from the router; 413 for a body over the cap; 429 and 503 with
Retry-After; 500 naming only the request id), bad input names its fields (google.rpc.BadRequest), and a JSON body
is read whatever its Content-Type says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.rest_errors import recmesh_error_response
from gateway.stages import Stages
from serving import errors
from tests.gateway.harness import Gateway, assert_error, field_violations, ids, reference

session_loop = pytest.mark.asyncio(loop_scope="session")

BAD_RECOMMENDS = [
    ("k zero", {"session": ["a"], "k": 0}, "k"),
    ("k above the cap", {"session": ["a"], "k": 201}, "k"),
    ("k of the wrong type", {"session": ["a"], "k": "ten"}, "k"),
    ("session not a list", {"session": "abc"}, "session"),
    ("session of numbers", {"session": [1, 2]}, "session"),
    ("unknown field", {"session": ["a"], "sesion": ["b"]}, "sesion"),
    ("candidate_count above the cap", {"session": ["a"], "options": {"candidate_count": 5000}}, "candidate_count"),
    ("budget above the cap", {"session": ["a"], "options": {"budget_ms": 20000}}, "budget_ms"),
    ("filter with a syntax error", {"options": {"filter": "price <"}}, "column 8"),
    ("filter on an unknown attribute", {"options": {"filter": "colour == 'red'"}}, "unknown attribute"),
    ("filter comparing a number to text", {"options": {"filter": "price == 'cheap'"}}, "price"),
    ("filter too long", {"options": {"filter": "a == 1 or " * 100 + "a == 1"}}, "1000"),
    ("filter nested too deep", {"options": {"filter": "(" * 40 + "available" + ")" * 40}}, "deep"),
    ("pin beyond k", {"k": 3, "options": {"pins": [{"item_id": "a", "position": 4}]}}, "pins"),
    (
        "the same position pinned twice",
        {"k": 3, "options": {"pins": [{"item_id": "a", "position": 1}, {"item_id": "b", "position": 1}]}},
        "twice",
    ),
    ("diversity on an unknown attribute", {"options": {"diversity": {"attribute": "x", "max_per_value": 1}}}, "x"),
    ("diversity cap of zero", {"options": {"diversity": {"attribute": "brand", "max_per_value": 0}}}, "max_per_value"),
    ("boost without a filter", {"options": {"boosts": [{"filter": "", "add": 1}]}}, "empty"),
    (
        "boost with a negative multiplier",
        {"options": {"boosts": [{"filter": "available", "multiply": -1}]}},
        "multiply",
    ),
    ("query vector of the wrong dimension", {"options": {"query_vector": [0.1, 0.2, 0.3]}}, "dims"),
    ("query vector with NaN-like text", {"options": {"query_vector": ["x"]}}, "query_vector"),
]


@session_loop
@pytest.mark.parametrize(("what", "body", "says"), BAD_RECOMMENDS, ids=[b[0] for b in BAD_RECOMMENDS])
async def test_bad_recommend_input_is_a_400_with_a_message(gateway: Gateway, what: str, body: Any, says: str) -> None:
    assert_error(await gateway.http.post("/v1/recommend", json=body), 400, "INVALID_ARGUMENT", says)


@session_loop
async def test_a_json_body_is_read_as_json_only_when_it_says_so(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    """A form or text/plain POST (what any web page can send cross-site) is 415; application/json and
    application/*+json are read. The README's curl examples send -H 'Content-Type: application/json'."""
    body = json.dumps({"session": session_items, "k": 5}).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""):
        response = await gateway.http.post("/v1/recommend", content=body, headers={"content-type": content_type})
        assert_error(response, 415, "INVALID_ARGUMENT", "must be JSON")
        response = await gateway.http.post("/v1/events", content=b"{}", headers={"content-type": content_type})
        assert_error(response, 415, "INVALID_ARGUMENT", "must be JSON")
    for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.api+json"):
        response = await gateway.http.post("/v1/recommend", content=body, headers={"content-type": content_type})
        assert response.status_code == 200, response.text
        assert ids(response.json()) == reference(model, session_items)[:5]


@session_loop
async def test_malformed_json_is_a_400_not_a_422(gateway: Gateway) -> None:
    response = await gateway.http.post(
        "/v1/recommend", content=b'{"session": ["a",', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "INVALID_ARGUMENT", "malformed JSON")
    not_an_object = await gateway.http.post("/v1/recommend", json=["a", "b"])
    assert_error(not_an_object, 400, "INVALID_ARGUMENT")


@session_loop
async def test_oversized_body_is_a_413(gateway: Gateway) -> None:
    big = {"session": ["x" * 200] * 6000}  # ~1.2 MB
    assert_error(await gateway.http.post("/v1/recommend", json=big), 413, "RESOURCE_EXHAUSTED", "larger")

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while reading
        yield b'{"session": ['
        for _ in range(6000):
            yield b'"' + b"x" * 200 + b'",'
        yield b'"y"]}'

    chunked = await gateway.http.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert_error(chunked, 413, "RESOURCE_EXHAUSTED")


@session_loop
async def test_chunked_body_under_the_cap_is_accepted(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    async def chunks() -> AsyncIterator[bytes]:
        payload = json.dumps({"session": session_items}).encode()
        yield payload[:10]
        yield payload[10:]

    response = await gateway.http.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200 and ids(response.json()) == reference(model, session_items)


# ------------------------------------------------------------------------------------- the one error shape
@session_loop
async def test_bad_input_names_its_fields_as_rest_names_them(gateway: Gateway) -> None:
    """google.rpc.BadRequest field violations: pydantic's type errors and the gateway's own checks alike."""
    wrong_type = assert_error(
        await gateway.http.post("/v1/recommend", json={"session": ["a", 2]}), 400, "INVALID_ARGUMENT"
    )
    assert list(field_violations(wrong_type)) == ["session[1]"]
    nested = await gateway.http.post("/v1/recommend", json={"session": ["a"], "options": {"budget_ms": "soon"}})
    assert list(field_violations(assert_error(nested, 400, "INVALID_ARGUMENT"))) == ["options.budget_ms"]
    empty_id = assert_error(
        await gateway.http.post("/v1/recommend", json={"session": ["a", ""]}), 400, "INVALID_ARGUMENT"
    )
    assert field_violations(empty_id) == {"session[1]": empty_id["message"]}  # the use case's session_item_ids
    bad_k = assert_error(await gateway.http.get("/v1/items/i1/similar", params={"k": 0}), 400, "INVALID_ARGUMENT")
    assert list(field_violations(bad_k)) == ["k"]
    query_k = assert_error(await gateway.http.get("/v1/items/i1/similar", params={"k": "x"}), 400, "INVALID_ARGUMENT")
    assert list(field_violations(query_k)) == ["k"]
    malformed = await gateway.http.post("/v1/recommend", content=b"{", headers={"content-type": "application/json"})
    assert assert_error(malformed, 400, "INVALID_ARGUMENT", "malformed JSON")["details"] == []  # no field to name


@session_loop
async def test_unknown_paths_and_wrong_methods_keep_their_status_in_the_same_shape(gateway: Gateway) -> None:
    assert_error(await gateway.http.get("/v1/nothing-here"), 404, "NOT_FOUND")
    wrong_method = await gateway.http.get("/v1/recommend")
    assert_error(wrong_method, 405, "UNIMPLEMENTED")
    assert wrong_method.headers["allow"] == "POST"
    assert_error(await gateway.http.delete("/v1/items/i1/similar"), 405, "UNIMPLEMENTED")


@session_loop
async def test_the_request_id_of_the_caller_is_the_errors_request_id(gateway: Gateway) -> None:
    response = await gateway.http.post("/v1/recommend", json={"k": 0}, headers={"x-request-id": "mine-1"})
    assert assert_error(response, 400, "INVALID_ARGUMENT")["request_id"] == "mine-1"
    too_big = await gateway.http.post("/v1/recommend", content=b" " * 2_000_000, headers={"x-request-id": "mine-2"})
    assert assert_error(too_big, 413, "RESOURCE_EXHAUSTED")["request_id"] == "mine-2"


@session_loop
async def test_a_bug_is_a_500_naming_only_the_request_id(gateway: Gateway, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A bug cannot be caused for real: a stage call that raises an unexpected exception stands in for one."""

    async def bug(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret internals")

    monkeypatch.setattr(Stages, "similar_items", bug)
    with caplog.at_level("ERROR"):
        response = await gateway.http.get("/v1/items/i1/similar", headers={"x-request-id": "bug-1"})
    error = assert_error(response, 500, "INTERNAL", "request_id=bug-1")
    assert "secret" not in response.text and error["details"] == []


def test_errors_that_know_when_to_retry_answer_retry_after() -> None:
    response = recmesh_error_response(errors.Unavailable("redis unavailable", retry_after_s=2.5))
    assert response.status_code == 503 and response.headers["retry-after"] == "3"  # whole seconds, rounded up
    body = json.loads(bytes(response.body))["error"]
    assert body["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]
    assert "retry-after" not in recmesh_error_response(errors.Unavailable("down")).headers


def test_the_openapi_document_shows_the_error_shape(gateway: Gateway) -> None:
    spec = gateway.app.openapi()
    body = spec["components"]["schemas"]["ErrorBody"]
    assert set(body["properties"]) == {"code", "status", "message", "details", "request_id"}
    responses = spec["paths"]["/v1/recommend"]["post"]["responses"]
    assert {"400", "404", "413", "500", "503"} <= set(responses)
