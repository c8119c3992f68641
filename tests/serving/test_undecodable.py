"""Bytes that are not a valid request message, sent over a real channel to real servers: INVALID_ARGUMENT with a
short message for unary and streaming methods alike, no traceback logged, at most one WARNING line per interval."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from recmesh.v1 import common_pb2
from recmesh.v1 import recommendation_service_pb2 as pb
from services.ranking.server import create_server as create_ranking_server
from services.ranking.settings import Settings as RankingSettings
from serving import interceptor
from tests.serving.fake_servicers import Running

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop
GARBAGE = b"\xff\xff\xff\xff\x0f"  # field 31, wire type 7: no protobuf message decodes it


def identity(data: bytes) -> bytes:
    return data


async def unary(channel: grpc.aio.Channel, method: str, data: bytes = GARBAGE) -> grpc.aio.AioRpcError:
    call = channel.unary_unary(method, request_serializer=identity, response_deserializer=identity)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(data, timeout=5)
    return info.value


async def streamed(channel: grpc.aio.Channel, method: str, *messages: bytes) -> grpc.aio.AioRpcError:
    call = channel.stream_unary(method, request_serializer=identity, response_deserializer=identity)

    async def requests() -> AsyncIterator[bytes]:
        for message in messages:
            yield message

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(requests(), timeout=5)
    return info.value


def assert_short_invalid_argument(err: grpc.aio.AioRpcError) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert "cannot be decoded" in (err.details() or "") and len(err.details() or "") < 100


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@session_loop
async def test_undecodable_unary_and_stream_messages_are_invalid_argument_without_a_traceback(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    valid_event = pb.RecordEventRequest(event=common_pb2.Event(item_id="a")).SerializeToString()
    with caplog.at_level(logging.DEBUG):
        assert_short_invalid_argument(await unary(running.channel, "/recmesh.v1.EmbeddingStoreService/GetEmbeddings"))
        assert_short_invalid_argument(
            await streamed(running.channel, "/recmesh.v1.RecommendationService/RecordEvents", GARBAGE)
        )
        # A bad message after good ones fails the stream too (the good ones are not answered on their own).
        assert_short_invalid_argument(
            await streamed(running.channel, "/recmesh.v1.RecommendationService/RecordEvents", valid_event, GARBAGE)
        )
    no_tracebacks(caplog)
    # Counted like any other answer: by method and status.
    labels = {"rpc_system": "grpc", "rpc_service": "recmesh.v1.EmbeddingStoreService", "rpc_method": "GetEmbeddings"}
    invalid = str(grpc.StatusCode.INVALID_ARGUMENT.value[0])
    assert running.sample("rpc_server_call_duration_seconds_count", **labels, rpc_grpc_status_code=invalid) == 1


@session_loop
async def test_a_flood_of_undecodable_messages_logs_one_warning_line(
    running: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interceptor, "_UNDECODABLE_LOG", interceptor._UndecodableLog(every_s=3600))
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            await unary(running.channel, "/recmesh.v1.EmbeddingStoreService/GetEmbeddings")
    lines = [r for r in caplog.records if r.name == "serving.interceptor"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    no_tracebacks(caplog)


@session_loop
async def test_a_real_stage_service_answers_undecodable_bytes_with_invalid_argument(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = RankingSettings(RECMESH_MODELS_DIR=str(models_dir), METRICS_PORT=0)
    server, port, _health, _core = await create_ranking_server(settings, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with caplog.at_level(logging.DEBUG):
                assert_short_invalid_argument(await unary(channel, "/recmesh.v1.RankingService/Rank"))
                assert_short_invalid_argument(await unary(channel, "/recmesh.v1.RankingService/BatchRank"))
            no_tracebacks(caplog)
    finally:
        await server.stop(None)
