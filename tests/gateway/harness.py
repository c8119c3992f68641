"""The gateway under test and what its answers are compared with.

A gateway built as ``python -m gateway`` builds it (``create_app(settings)``: its lifespan opens channels and
Redis from the settings) in front of the three real stage services on loopback (port 0), the session's private
Redis and the tiny test bundle; REST through httpx (ASGITransport), gRPC through a real grpc.aio server. Expected
answers come from the offline pipeline (`Model`), the in-process reference. The fixtures are in conftest.py.
"""

from __future__ import annotations

import contextlib
import importlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import numpy as np

from gateway.app import create_app
from gateway.clients import Clients
from gateway.grpc_api import create_grpc_server
from gateway.settings import Settings
from recmesh.pipeline import MAX_SESSION, Model, session_query
from recmesh.v1 import (
    candidate_generation_service_pb2_grpc,
    ranking_service_pb2_grpc,
    recommendation_service_pb2_grpc,
)
from services.candidate_generation import servicer as candidate_generation_servicer
from services.candidate_generation.core import CandidateGenerator
from services.ranking import servicer as ranking_servicer
from services.ranking.core import CandidateRanker
from serving.stage_service import start_model_service
from tests.helpers import auth_headers, keyed_channel, test_key

STAGES = ("embedding_store", "candidate_generation", "ranking")
SLOW_MACHINE_BUDGET_MS = 10_000  # no loaded test machine runs out of it (a late hop would degrade the answer)


# ----------------------------------------------------------------------------------------------- processes
class Stage:
    """One real stage service (services/<name>/server.py) on 127.0.0.1:0."""

    def __init__(self, server: grpc.aio.Server, port: int, core: Any) -> None:
        self.server, self.port, self.core = server, port, core

    async def stop(self) -> None:
        await self.server.stop(None)
        aclose = getattr(self.core, "aclose", None)  # the embedding store's Redis client, closed before the loop
        if aclose is not None:
            await aclose()


async def start_stage(name: str, models_dir: Path, redis_url: str) -> Stage:
    settings_cls = importlib.import_module(f"services.{name}.settings").Settings
    create_server = importlib.import_module(f"services.{name}.server").create_server
    settings = settings_cls(RECMESH_MODELS_DIR=str(models_dir), REDIS_URL=redis_url)
    server, port, _health, core = await create_server(settings, "127.0.0.1:0")
    return Stage(server, port, core)


# A model stage's parts: its core and how its servicer is added to a server.
MODEL_STAGES: dict[str, tuple[Any, Any, str]] = {
    "candidate_generation": (
        CandidateGenerator,
        candidate_generation_service_pb2_grpc.add_CandidateGenerationServiceServicer_to_server,
        candidate_generation_servicer.SERVICE_NAME,
    ),
    "ranking": (
        CandidateRanker,
        ranking_service_pb2_grpc.add_RankingServiceServicer_to_server,
        ranking_servicer.SERVICE_NAME,
    ),
}


async def start_model_stage(name: str, models_dir: Path, servicer: type) -> Stage:
    """A real candidate_generation or ranking service (registry, core, interceptor, batch RPCs) whose servicer is
    ``servicer``: a thin subclass of the real one that misbehaves (answers late, or with another version)."""
    make_core, add, service_name = MODEL_STAGES[name]
    settings = importlib.import_module(f"services.{name}.settings").Settings(RECMESH_MODELS_DIR=str(models_dir))
    server, port, _health, core = await start_model_service(
        settings, "127.0.0.1:0", make_core, servicer, add, service_name
    )
    return Stage(server, port, core)


def gateway_settings(models_dir: Path, redis_url: str, **ports: int) -> Settings:
    """Settings of a gateway in front of the stages on ``ports``, accepting the all-scope test key."""
    env = {"RECMESH_MODELS_DIR": str(models_dir), "REDIS_URL": redis_url, "AUTH_KEYS_FILE": str(test_key()[1])}
    for name, port in ports.items():
        env[f"{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
    return Settings(**env)


@dataclass
class Gateway:
    """A running gateway: its REST app (and an httpx client on it) and a gRPC stub on its server; both send the
    all-scope test key (tests.helpers.test_key) with every request."""

    app: Any
    http: httpx.AsyncClient
    stub: recommendation_service_pb2_grpc.RecommendationServiceStub
    channel: grpc.aio.Channel
    redis_url: str
    grpc_target: str = ""  # the gRPC server's host:port (a channel of a test's own: another key, or none)

    @property
    def clients(self) -> Clients:
        return self.app.state.core.clients  # type: ignore[no-any-return]

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(path, json=body)

    async def recommend(self, **body: Any) -> dict[str, Any]:
        """A recommendation with a budget no loaded test machine runs out of, asserted not degraded."""
        body["options"] = {"budget_ms": SLOW_MACHINE_BUDGET_MS, **body.get("options", {})}
        response = await self.post("/v1/recommend", body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert not answer["degraded"], answer["degradations"]
        return answer

    async def record(self, *events: dict[str, Any]) -> httpx.Response:
        return await self.post("/v1/events", {"events": list(events)} if len(events) != 1 else events[0])


@contextlib.asynccontextmanager
async def running_gateway(
    models_dir: Path, redis_url: str, ports: dict[str, int], **config: Any
) -> AsyncIterator[Gateway]:
    """A gateway as ``python -m gateway`` builds it, with settings fields overridden by ``config``. Redis may take
    a second here (a history read that times out would recommend without it: a busy test machine is no reason)."""
    config = {"redis_timeout_ms": 1000, **config}
    settings = gateway_settings(models_dir, redis_url, **ports).model_copy(update=config)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        server, port, _ = await create_grpc_server(app.state.core, "127.0.0.1:0", authenticator=app.state.auth)
        channel = keyed_channel(f"127.0.0.1:{port}")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=auth_headers()) as http:
            try:
                stub = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)
                yield Gateway(app, http, stub, channel, redis_url, f"127.0.0.1:{port}")
            finally:
                await channel.close()
                await server.stop(None)


@contextlib.asynccontextmanager
async def isolated_gateway(models_dir: Path, workdir: Path) -> AsyncIterator[Gateway]:
    """A gateway and the three stages over a Redis of their own: for tests that write what the session's shared
    Redis must not hold (a catalogue with unavailable items, a running experiment)."""
    from tests.conftest import RedisServer
    from tests.gateway.conftest import stop_within

    redis = RedisServer(workdir)
    redis.start()
    stages = {name: await start_stage(name, models_dir, redis.url) for name in STAGES}
    try:
        async with running_gateway(models_dir, redis.url, {name: s.port for name, s in stages.items()}) as gateway:
            yield gateway
    finally:
        for name, stage in stages.items():
            await stop_within(stage.stop(), f"an isolated {name} service")
        redis.stop()


# --------------------------------------------------------------------------------------------- assertions
def ids(body: dict[str, Any], key: str = "items") -> list[str]:
    return [i["item_id"] for i in body[key]]


def assert_error(response: httpx.Response, status: int, code: str, says: str = "") -> dict[str, Any]:
    """The one error shape: ``{"error": {"code": <HTTP status>, "status": <gRPC status name>, "message",
    "details": [...], "request_id"}}``, the id the same as the answer's x-request-id header."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "status", "message", "details", "request_id"}, error
    assert (error["code"], error["status"]) == (status, code)
    assert error["message"] and isinstance(error["details"], list)
    assert error["request_id"] and error["request_id"] == response.headers["x-request-id"]
    assert says.lower() in error["message"].lower(), error["message"]
    return error


def field_violations(error: dict[str, Any]) -> dict[str, str]:
    """The field -> description of an error's google.rpc.BadRequest detail ({} when it has none)."""
    bad = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"]
    return {v["field"]: v["description"] for d in bad for v in d["fieldViolations"]}


def new_user() -> str:
    return f"user-{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------------------ expected answers
def reference(model: Model, session: list[str], k: int = 10, n: int | None = None, rank: bool = True) -> list[str]:
    """The offline pipeline's answer: the bundle's default recipe, or ANN alone for `n` candidates when given (as
    the gateway does for options.candidate_count)."""
    history, _ = model.lookup(session)
    rows, _ = model.recommend(history, k, n, rank=rank)
    return [model.item_ids[r] for r in rows]


def offline(
    model: Model,
    session: list[str],
    weights: list[float] | None = None,
    k: int = 10,
    exclude: list[str] | None = None,
    n: int | None = None,
) -> list[str]:
    """The offline pipeline (recmesh.evaluate.run's steps) for a session of known items with optional weights:
    query of the most recent MAX_SESSION, candidates excluding ``exclude`` (default: the session) from the
    bundle's default recipe (from ANN alone, max(n, k) of them, when `n` is given: options.candidate_count),
    ranking."""
    rows = np.array([model.index_of[i] for i in session], dtype=np.int64)
    recent = rows[-MAX_SESSION:]
    w = None if weights is None else np.asarray(weights[-MAX_SESSION:], dtype=np.float32)
    query = session_query(model.space.vectors[recent], model.query_decay, w)
    excluded, _ = model.lookup(exclude if exclude is not None else session)
    if n is not None:
        candidates, scores = model.retrieve(query, max(n, k), np.unique(excluded))
    else:
        pool = model.candidates(recent, model.default_recipe, np.unique(excluded), query=query)
        candidates, scores = pool.rows, pool.scores
    ranked, _ = model.rank(recent, candidates, scores)
    return [model.item_ids[r] for r in ranked[:k]]


def farthest_from(model: Model, item: str, among: int = 200) -> str:
    """Of the `among` most popular items, the one least similar to ``item``: a change of topic."""
    rows, _ = model.popular(among)
    sims = model.space.vectors[rows] @ model.space.vectors[model.index_of[item]]
    return model.item_ids[int(rows[int(np.argmin(sims))])]


def neighbours(model: Model, item: str, k: int = 20) -> set[str]:
    row = model.index_of[item]
    rows, _ = model.retrieve(model.query(np.array([row])), k, np.array([row]))
    return {model.item_ids[r] for r in rows}
