"""API keys on both faces: 401/403/200 per scope, history only with history:read, rotation without a restart,
per-key rate limits, and no key in any log line (gateway/auth.py, docs/security.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
import pytest_asyncio

from gateway import auth
from recmesh.v1 import common_pb2, recommendation_service_pb2, recommendation_service_pb2_grpc
from tests.gateway.harness import Gateway, assert_error, new_user, running_gateway
from tests.helpers import auth_headers, keyed_channel, write_keys

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2

ROLES = {  # key id -> scopes
    "shop-front": ["recommend"],
    "shop-back": ["recommend", "history:read", "events:write"],
    "ops": ["stages"],
}


class Keyed:
    """A gateway whose keys file holds one key per ROLES entry (and a slow one: 2 calls, then 1 per 100 s)."""

    def __init__(self, gateway: Gateway, keys: dict[str, str]) -> None:
        self.gateway, self.keys = gateway, keys
        self.anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gateway")

    async def post(self, path: str, body: Any, role: str | None = None, **headers: str) -> httpx.Response:
        sent = {**(auth_headers(self.keys[role]) if role else {}), **headers}
        return await self.anonymous.post(path, json=body, headers=sent)

    def stub(
        self, role: str | None
    ) -> tuple[grpc.aio.Channel, recommendation_service_pb2_grpc.RecommendationServiceStub]:
        target = self.gateway.grpc_target
        channel = keyed_channel(target, self.keys[role]) if role else grpc.aio.insecure_channel(target)
        return channel, recommendation_service_pb2_grpc.RecommendationServiceStub(channel)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def keyed(  # type: ignore[no-untyped-def]
    models_dir: Path, redis_server, stage_ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Keyed]:
    keys = {role: auth.new_key(role) for role in [*ROLES, "slow"]}
    entries = [auth.key_entry(keys[role], scopes) for role, scopes in ROLES.items()]
    entries.append(auth.key_entry(keys["slow"], ["recommend"], rate_limit=0.01, burst=2))
    path = write_keys(tmp_path_factory.mktemp("keys") / "keys.json", *entries)
    async with running_gateway(models_dir, redis_server.url, stage_ports, auth_keys_file=path) as gateway:
        keyed = Keyed(gateway, keys)
        yield keyed
        await keyed.anonymous.aclose()


def _event(user: str, item: str) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": "view"}


@session_loop
async def test_rest_needs_a_valid_key_with_the_route_scope(keyed: Keyed, session_items: list[str]) -> None:
    body = {"session": session_items, "k": 3}
    missing = await keyed.post("/v1/recommend", body)
    assert_error(missing, 401, "UNAUTHENTICATED", "missing API key")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    forged = keyed.keys["shop-front"][:-4] + "AAAA"
    assert_error(await keyed.post("/v1/recommend", body, authorization=f"Bearer {forged}"), 401, "UNAUTHENTICATED")
    assert_error(await keyed.post("/v1/recommend", body, authorization="Bearer nonsense"), 401, "UNAUTHENTICATED")
    assert (await keyed.post("/v1/recommend", body, "shop-front")).status_code == 200
    assert (await keyed.post("/v1/recommend", body, **{"x-api-key": keyed.keys["shop-front"]})).status_code == 200
    denied = await keyed.post("/v1/events", _event(new_user(), session_items[0]), "shop-front")
    assert_error(denied, 403, "PERMISSION_DENIED", "'events:write'")
    assert_error(await keyed.post("/v1/recommend", body, "ops"), 403, "PERMISSION_DENIED", "'recommend'")
    assert (await keyed.post("/v1/candidates", {"item_ids": session_items[:1]}, "ops")).status_code == 200
    similar = await keyed.anonymous.get(
        f"/v1/items/{session_items[0]}/similar", headers=auth_headers(keyed.keys["ops"])
    )
    assert similar.status_code == 200
    assert_error(await keyed.anonymous.get(f"/v1/items/{session_items[0]}/similar"), 401, "UNAUTHENTICATED")
    assert_error(await keyed.anonymous.get("/v1/nothing-here"), 401, "UNAUTHENTICATED")  # no route map for strangers
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await keyed.anonymous.get(open_path)).status_code == 200, open_path


@session_loop
async def test_the_openapi_document_says_which_operations_need_a_key_and_which_scope(keyed: Keyed) -> None:
    document = (await keyed.anonymous.get("/openapi.json")).json()
    assert {"bearer", "apiKey"} <= set(document["components"]["securitySchemes"])
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearer": []}, {"apiKey": []}], path
                assert {"401", "403"} <= set(operation["responses"]), path
                assert "Needs an API key with the scope" in operation["description"], path
            else:
                assert "security" not in operation, path  # probes stay open
    assert "`history:read`" in document["paths"]["/v1/recommend"]["post"]["description"]


@session_loop
async def test_a_visitors_history_is_readable_only_with_history_read(keyed: Keyed, session_items: list[str]) -> None:
    user = new_user()
    assert (await keyed.post("/v1/events", _event(user, session_items[0]), "shop-back")).status_code == 200
    for body in ({"user_id": user}, {"user_id": user, "options": {"include_seen": True}}):
        assert_error(await keyed.post("/v1/recommend", body, "shop-front"), 403, "PERMISSION_DENIED", "history:read")
        assert (await keyed.post("/v1/recommend", body, "shop-back")).status_code == 200
    channel, stub = keyed.stub("shop-front")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recommend(pb.RecommendRequest(user_id=user), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "history:read" in info.value.details()


@session_loop
async def test_grpc_needs_a_valid_key_with_the_method_scope(keyed: Keyed, session_items: list[str]) -> None:
    request = pb.RecommendRequest(session_item_ids=session_items, k=3)
    channel, stub = keyed.stub(None)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recommend(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = (("x-api-key", keyed.keys["ops"] + "x"),)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recommend(request, timeout=5, metadata=wrong)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel, stub = keyed.stub("shop-front")
    async with channel:
        assert len((await stub.Recommend(request, timeout=5)).items) == 3
        event = common_pb2.Event(user_id=new_user(), item_id=session_items[0], type=common_pb2.EVENT_TYPE_VIEW)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RecordEvent(pb.RecordEventRequest(event=event), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "events:write" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RecordEvents(iter([pb.RecordEventRequest(event=event)]), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel, stub = keyed.stub("shop-back")
    async with channel:
        assert (await stub.RecordEvents(iter([pb.RecordEventRequest(event=event)]), timeout=5)).stored == 1


@session_loop
async def test_a_key_over_its_rate_limit_gets_429_and_resource_exhausted(
    keyed: Keyed, session_items: list[str]
) -> None:
    body = {"session": session_items, "k": 3}
    answers = [await keyed.post("/v1/recommend", body, "slow") for _ in range(3)]  # a burst of 2, then 1 per 100 s
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert_error(answers[2], 429, "RESOURCE_EXHAUSTED", "'slow' is over its rate limit")
    assert int(answers[2].headers["retry-after"]) >= 1
    assert (await keyed.post("/v1/recommend", body, "shop-front")).status_code == 200  # other keys unaffected
    channel, stub = keyed.stub("slow")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recommend(pb.RecommendRequest(session_item_ids=session_items), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@session_loop
async def test_rotation_takes_effect_without_a_restart_and_no_key_is_logged(  # type: ignore[no-untyped-def]
    models_dir: Path,
    redis_server,
    stage_ports: dict[str, int],
    tmp_path: Path,
    session_items: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)  # look at the file on every request
    old, new = auth.new_key("old"), auth.new_key("rotated")
    path = write_keys(tmp_path / "keys.json", auth.key_entry(old, ["recommend"]))
    body = {"session": session_items, "k": 3}
    caplog.set_level(logging.DEBUG)
    async with running_gateway(models_dir, redis_server.url, stage_ports, auth_keys_file=path) as gateway:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gateway")
        async with http:
            assert (await http.post("/v1/recommend", json=body, headers=auth_headers(old))).status_code == 200
            write_keys(path, auth.key_entry(new, ["recommend"]))
            assert (await http.post("/v1/recommend", json=body, headers=auth_headers(new))).status_code == 200
            assert_error(await http.post("/v1/recommend", json=body, headers=auth_headers(old)), 401, "UNAUTHENTICATED")
            path.write_text("{half a file")  # a broken rotation: refused, the keys in use kept
            await asyncio.sleep(0.01)
            assert (await http.post("/v1/recommend", json=body, headers=auth_headers(new))).status_code == 200
            channel = keyed_channel(gateway.grpc_target, old)
            async with channel:
                stub = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Recommend(pb.RecommendRequest(session_item_ids=session_items), timeout=5)
    assert any("not reloaded" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        logged = f"{record.getMessage()} {record.__dict__}"
        for key in (old, new):
            assert key.split("_", 2)[2] not in logged, record


def test_no_keys_file_stops_the_gateway_unless_auth_is_disabled(tmp_path: Path) -> None:
    from gateway.settings import Settings

    with pytest.raises(auth.AuthConfigError, match="AUTH_KEYS_FILE is not set"):
        auth.Authenticator.from_settings(Settings())
    (tmp_path / "keys.json").write_text('{"keys": [{"id": "x", "sha256": "00", "scopes": []}]}')
    with pytest.raises(auth.AuthConfigError, match="sha256"):
        auth.Authenticator.from_settings(Settings(AUTH_KEYS_FILE=str(tmp_path / "keys.json")))
    assert not auth.Authenticator.from_settings(Settings(AUTH="disabled")).enabled
