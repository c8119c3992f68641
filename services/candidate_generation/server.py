"""Build the candidate-generation gRPC server: registry loaded, servicer registered, model watcher running.

Usage::

    server, port, health, generator = await create_server(Settings(), "127.0.0.1:0")
"""

from __future__ import annotations

from recmesh.v1 import candidate_generation_service_pb2_grpc as pb_grpc
from services.candidate_generation.core import CandidateGenerator
from services.candidate_generation.servicer import SERVICE_NAME, CandidateGenerationServicer
from services.candidate_generation.settings import Settings
from serving.stage_service import Started, start_model_service


async def create_server(settings: Settings, address: str | None = None) -> Started[CandidateGenerator]:
    """Serve on `address` (default: every interface, settings.port) until the server is stopped."""
    add = pb_grpc.add_CandidateGenerationServiceServicer_to_server
    return await start_model_service(
        settings, address, CandidateGenerator, CandidateGenerationServicer, add, SERVICE_NAME
    )
