"""POST /v1/recommend answered by gateway/fast_path.py equals the same request answered through FastAPI's route
(REST_FAST_PATH=false): same status, same body (but for the per-request id and timings), good input or bad."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.gateway.harness import Gateway, running_gateway

session_loop = pytest.mark.asyncio(loop_scope="session")

JSON = {"content-type": "application/json"}
VOLATILE = ("recommendation_id", "timings")


def bodies(session: list[str]) -> list[bytes | str]:
    return [
        f'{{"session": ["{session[0]}", "{session[1]}"], "k": 5}}',
        f'{{"session": ["{session[0]}"], "k": 5, "options": {{"skip_ranking": true, "budget_ms": 5000}}}}',
        f'{{"session": ["{session[0]}", "nope"], "k": 3, "options": {{"include_seen": true}}}}',
        '{"session": ["a"], "k": 500}',  # out of range: the gateway's check
        '{"session": ["a"], "k": "ten"}',  # wrong type: pydantic
        '{"session": ["a"], "kk": 3}',  # unknown field
        '{"session": ["a"], "model_version": "v-none"}',  # unknown version: 404
        '{"session": []}',  # nothing to recommend from: popular items
        '{"session": [], "options": {"filter": "price <"}}',  # a filter's syntax error
    ]


# Bodies the two paths refuse alike (400 INVALID_ARGUMENT) but word differently: the JSON parsers differ.
WORDED_DIFFERENTLY = ['{"session": ["a"', "[]", ""]


def comparable(response: Any) -> tuple[int, Any]:
    body = response.json()
    for key in VOLATILE:
        body.pop(key, None)
    if "error" in body:  # the request id is per request too (checked equal to the x-request-id header)
        assert body["error"].pop("request_id") == response.headers["x-request-id"]
    return response.status_code, body


@session_loop
async def test_the_fast_path_answers_exactly_as_the_framework_route(
    gateway: Gateway, models_dir: Path, redis_server, stage_ports: dict[str, int], session_items: list[str]
) -> None:  # type: ignore[no-untyped-def]
    async with running_gateway(models_dir, redis_server.url, stage_ports, rest_fast_path=False) as framework:
        for body in bodies(session_items):
            fast = await gateway.http.post("/v1/recommend", content=body, headers=JSON)
            slow = await framework.http.post("/v1/recommend", content=body, headers=JSON)
            assert comparable(fast) == comparable(slow), body
            assert fast.headers["x-request-id"] and ("server-timing" in fast.headers) == (fast.status_code == 200)
        for body in WORDED_DIFFERENTLY:
            fast = await gateway.http.post("/v1/recommend", content=body, headers=JSON)
            slow = await framework.http.post("/v1/recommend", content=body, headers=JSON)
            assert fast.status_code == slow.status_code == 400, body
            assert fast.json()["error"]["status"] == slow.json()["error"]["status"] == "INVALID_ARGUMENT"
