"""Build the ranking gRPC server: registry loaded, servicer registered, model watcher running.

server, port, health, ranker = await create_server(Settings(), "127.0.0.1:0")
"""

from __future__ import annotations

import asyncio

import grpc.aio
from grpc_health.v1.health import HealthServicer

from recmesh.registry import ModelRegistry
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.ranking.core import CandidateRanker
from services.ranking.servicer import SERVICE_NAME, RankingServicer
from services.ranking.settings import Settings
from serving import server as common_server


async def create_server(
    settings: Settings, address: str | None = None
) -> tuple[grpc.aio.Server, int, HealthServicer, CandidateRanker]:
    registry = ModelRegistry(settings.models_dir, settings.model_version)
    await asyncio.to_thread(registry.load_initial)
    ranker = CandidateRanker(registry)
    servicer = RankingServicer(ranker)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_RankingServiceServicer_to_server(servicer, server)

    server, port, health = await common_server.create_server(
        address or f"[::]:{settings.port}",
        register,
        [SERVICE_NAME],
        settings.max_message_mb,
        settings.max_connection_age_s,
    )
    common_server.run_while_serving(server, registry.watch())
    return server, port, health, ranker
