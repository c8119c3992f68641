"""Build the candidate-generation gRPC server: registry loaded, live catalogue read, servicer registered, model
watcher running.

Usage::

    server, port, health, generator = await create_server(Settings(), "127.0.0.1:0")
"""

from __future__ import annotations

from recmesh.registry import ModelRegistry
from recmesh.v1 import candidate_generation_service_pb2_grpc as pb_grpc
from services.candidate_generation.core import CandidateGenerator
from services.candidate_generation.servicer import SERVICE_NAME, CandidateGenerationServicer
from services.candidate_generation.settings import Settings
from serving.catalog_live import LiveCatalog
from serving.filters import warm_up
from serving.stage_service import Started, start_model_service

FIRST_READ_TIMEOUT_S = 15.0  # at start: wait this long for the whole catalogue before serving without it


async def create_server(settings: Settings, address: str | None = None) -> Started[CandidateGenerator]:
    """Serve on `address` (default: every interface, settings.port) until the server is stopped."""
    catalog = (
        LiveCatalog.from_url(settings.redis_url, timeout_ms=settings.redis_timeout_ms) if settings.redis_url else None
    )
    if catalog is not None:
        await catalog.refresh(timeout_s=FIRST_READ_TIMEOUT_S)

    def make_core(registry: ModelRegistry) -> CandidateGenerator:
        return CandidateGenerator(registry, catalog)

    add = pb_grpc.add_CandidateGenerationServiceServicer_to_server
    started = await start_model_service(settings, address, make_core, CandidateGenerationServicer, add, SERVICE_NAME)
    # what the first filtered request would otherwise pay: the parser's tables, the model's rows in the catalogue
    warm_up()
    if catalog is not None:
        generator = started[3]
        generator.filters.allowed(await generator.registry.get(), catalog.catalog)
    return started
