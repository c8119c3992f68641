"""Client channels (serving.channels): targets, balancing across replicas, retries."""

from __future__ import annotations

import asyncio
import json

import pytest

from recmesh.v1.embedding_store_service_pb2_grpc import EmbeddingStoreServiceStub
from serving import channels, server
from tests.serving.fake_servicers import FakeStore, request, running_server

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop


@session_loop
async def test_make_channel_spreads_calls_across_replicas():
    async with running_server() as one, running_server() as two:
        channel = channels.make_channel(f"127.0.0.1:{one.port},localhost:{two.port}")
        stub = EmbeddingStoreServiceStub(channel)
        for _ in range(50):
            await stub.GetEmbeddings(request("a"), timeout=5)
            if one.store.calls and two.store.calls:
                break
        await channel.close()
    assert one.store.calls > 0 and two.store.calls > 0


@session_loop
async def test_connections_end_at_their_maximum_age_and_clients_reconnect():
    """What lets the gateway find replicas added after it connected: each connection ends after its maximum age
    and the client opens a new one (re-resolving the name) without a failed call."""
    async with (
        running_server(max_connection_age_s=0.3) as served,
        channels.make_channel(f"127.0.0.1:{served.port}") as channel,
    ):
        stub = EmbeddingStoreServiceStub(channel)
        for _ in range(20):  # 2 s of calls: several connection lifetimes
            assert (await stub.GetEmbeddings(request("a"), timeout=5)).item_ids == ["a"]
            await asyncio.sleep(0.1)
    assert len(set(served.store.peers)) >= 2, served.store.peers


@session_loop
async def test_channel_retries_unavailable():
    async with (
        running_server(FakeStore(unavailable_times=1)) as served,
        channels.make_channel(f"127.0.0.1:{served.port}") as channel,
    ):
        reply = await EmbeddingStoreServiceStub(channel).GetEmbeddings(request("a"), timeout=5)
    assert reply.item_ids == ["a"]
    assert served.store.calls == 2


def test_resolve_target():
    assert channels.resolve_target("ranking:50051") == "ranking:50051"
    assert channels.resolve_target("dns:///ranking.default.svc:50051") == "dns:///ranking.default.svc:50051"
    assert channels.resolve_target("127.0.0.1:1, localhost:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channels.resolve_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(ValueError):
        channels.resolve_target("127.0.0.1:1,nope")


def test_channel_options_service_config():
    options = dict(channels.channel_options(8))
    assert options["grpc.max_receive_message_length"] == 8 * 1024 * 1024
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_serving_server_still_offers_the_channel_functions():
    """The gateway imports make_channel from serving.server."""
    assert server.make_channel is channels.make_channel
    assert server.resolve_target is channels.resolve_target
    assert server.channel_options is channels.channel_options
