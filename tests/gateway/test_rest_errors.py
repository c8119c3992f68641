"""REST bad input: every error is {"error": {"code", "message"}} with the status its kind has (400, not 422;
413 for a body over the cap), and a JSON body is read whatever its Content-Type says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.gateway.harness import Gateway, assert_error, ids, reference

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
    ("empty session", {"session": []}, "empty session"),
    ("no session at all", {}, "empty session"),
    ("query vector of the wrong dimension", {"options": {"query_vector": [0.1, 0.2, 0.3]}}, "dims"),
    ("query vector with NaN-like text", {"options": {"query_vector": ["x"]}}, "query_vector"),
]


@session_loop
@pytest.mark.parametrize(("what", "body", "says"), BAD_RECOMMENDS, ids=[b[0] for b in BAD_RECOMMENDS])
async def test_bad_recommend_input_is_a_400_with_a_message(gateway: Gateway, what: str, body: Any, says: str) -> None:
    assert_error(await gateway.http.post("/v1/recommend", json=body), 400, "INVALID_ARGUMENT", says)


@session_loop
async def test_a_json_body_is_read_whatever_the_content_type_says(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the README's examples must still work."""
    body = json.dumps({"session": session_items, "k": 5}).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
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
