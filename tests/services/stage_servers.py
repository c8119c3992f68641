"""Real candidate-generation and ranking servers on loopback (port 0) for the service tests, and the request
builders several test modules share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import numpy as np

from recmesh.v1 import candidate_generation_service_pb2_grpc as cg_grpc
from recmesh.v1 import ranking_service_pb2 as pb
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.candidate_generation.server import create_server as create_cg_server
from services.candidate_generation.settings import Settings as CgSettings
from services.ranking.server import create_server as create_ranking_server
from services.ranking.settings import Settings as RankingSettings
from serving.vectors import pack

Stub = cg_grpc.CandidateGenerationServiceStub


def cg_settings(models_dir: Path) -> CgSettings:
    return CgSettings(RECMESH_MODELS_DIR=str(models_dir), RECMESH_MODEL_VERSION="", METRICS_PORT=0)


@contextlib.asynccontextmanager
async def serve_candidates(models_dir: Path) -> AsyncIterator[tuple[Stub, grpc.aio.Channel]]:
    """A candidate-generation server and a stub on it, stopped on exit."""
    server, port, _health, _generator = await create_cg_server(cg_settings(models_dir), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Stub(channel), channel
    finally:
        await channel.close()
        await server.stop(None)


@dataclass
class Served:
    rank: pb_grpc.RankingServiceStub
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def serve_ranking(models_dir: Path) -> AsyncIterator[Served]:
    """A ranking server and a stub on it, stopped on exit."""
    settings = RankingSettings(RECMESH_MODELS_DIR=str(models_dir), RECMESH_MODEL_VERSION="", METRICS_PORT=0)
    server, port, _health, _ranker = await create_ranking_server(settings, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(pb_grpc.RankingServiceStub(channel), channel)
    finally:
        await channel.close()
        await server.stop(None)


def rank_request(session: Sequence[str], ids: Sequence[str], scores, **fields) -> pb.RankRequest:  # type: ignore[no-untyped-def]
    """A RankRequest in the one wire form: candidate ids + their scores packed as float32."""
    return pb.RankRequest(session_item_ids=session, candidate_ids=ids, candidate_scores=pack(scores), **fields)


def ids_of(model, rows: np.ndarray) -> list[str]:  # type: ignore[no-untyped-def]
    return [model.item_ids[r] for r in rows]
