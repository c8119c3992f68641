"""Build the candidate-generation gRPC server: registry loaded, servicer registered, model watcher running.

server, port, health, generator = await create_server(Settings(), "127.0.0.1:0")
"""

from __future__ import annotations

import asyncio

import grpc.aio
from grpc_health.v1.health import HealthServicer

from recmesh.registry import ModelRegistry
from recmesh.v1 import candidate_generation_service_pb2_grpc as pb_grpc
from services.candidate_generation.core import CandidateGenerator
from services.candidate_generation.servicer import SERVICE_NAME, CandidateGenerationServicer
from services.candidate_generation.settings import Settings
from serving import server as common_server


async def create_server(
    settings: Settings, address: str | None = None
) -> tuple[grpc.aio.Server, int, HealthServicer, CandidateGenerator]:
    registry = ModelRegistry(settings.models_dir, settings.model_version)
    await asyncio.to_thread(registry.load_initial)
    generator = CandidateGenerator(registry)
    servicer = CandidateGenerationServicer(generator)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_CandidateGenerationServiceServicer_to_server(servicer, server)

    server, port, health = await common_server.create_server(
        address or f"[::]:{settings.port}",
        register,
        [SERVICE_NAME],
        settings.max_message_mb,
        settings.max_connection_age_s,
    )
    common_server.run_while_serving(server, registry.watch())
    return server, port, health, generator
