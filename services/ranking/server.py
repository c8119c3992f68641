"""Build the ranking gRPC server: registry loaded, servicer registered, model watcher running.

Usage::

    server, port, health, ranker = await create_server(Settings(), "127.0.0.1:0")
"""

from __future__ import annotations

from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.ranking.core import CandidateRanker
from services.ranking.servicer import SERVICE_NAME, RankingServicer
from services.ranking.settings import Settings
from serving.stage_service import Started, start_model_service


async def create_server(settings: Settings, address: str | None = None) -> Started[CandidateRanker]:
    """Serve on `address` (default: every interface, settings.port) until the server is stopped."""
    add = pb_grpc.add_RankingServiceServicer_to_server
    return await start_model_service(settings, address, CandidateRanker, RankingServicer, add, SERVICE_NAME)
