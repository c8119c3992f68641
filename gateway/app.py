"""The REST/JSON face of the gateway: a FastAPI app factory over :class:`gateway.core.GatewayCore`.

    app = create_app(Settings())                 # its lifespan opens (and closes) channels and Redis
    app = create_app(settings, clients=clients)  # or bring your own backends (tests, gateway/__main__.py)

Every answer carries ``x-request-id`` (the caller's, or a new one, also sent on every hop); recommendations and
stage calls carry ``Server-Timing``. Errors are ``{"error": {"code": "INVALID_ARGUMENT", "message": ...}}`` with
the status their class knows (serving.errors), malformed JSON and wrong types included (400, not 422).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import core as gw
from gateway import schemas
from gateway.budget import server_timing
from gateway.clients import Clients, Scored
from gateway.events import Event, EventStoreUnavailable
from gateway.popular import Catalog
from gateway.settings import Settings
from serving.errors import RecmeshError
from serving.logs import get_request_id, request_id_from_metadata, request_id_var, set_request_id
from serving.metrics import RPC_ERRORS, RPC_LATENCY

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
SERVICE = "gateway-rest"


class JsonResponse(Response):
    """JSON rendered by orjson (numpy arrays and scalars included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status_code=status)


_CODE_OF_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}


# ------------------------------------------------------------------------------------------------ middleware
def _as_json(scope: Scope) -> Scope:
    """Every body is JSON: read it as such whatever the Content-Type says, so that `curl -d '{...}'` (which sends
    application/x-www-form-urlencoded) works as the README shows."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


class GatewayMiddleware:
    """Request id in and out, the 1 MiB body cap, latency/error metrics, and a last-resort 500 that names the
    request id but nothing internal. Plain ASGI (no BaseHTTPMiddleware task hop on the hot path)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = scope["headers"]
        rid = request_id_from_metadata((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
        token = set_request_id(rid)
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        if scope["method"] in ("POST", "PUT", "PATCH"):
            scope = _as_json(scope)
        try:
            length = next((v for k, v in headers if k == b"content-length"), None)
            if length is not None and int(length) > self.max_body_bytes:
                await self._too_large(send_with_id)
                return
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                replay = await self._buffered(receive)  # chunked: count the bytes ourselves
                if replay is None:
                    await self._too_large(send_with_id)
                    return
                receive = replay
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(500, "INTERNAL", f"internal error (request_id={rid})")(
                    scope, receive, send_with_id
                )
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            label = f"{scope['method']} {path}"
            RPC_LATENCY.labels(SERVICE, label).observe(time.perf_counter() - start)
            if status >= 400:
                RPC_ERRORS.labels(SERVICE, label, str(status)).inc()
            request_id_var.reset(token)

    async def _buffered(self, receive: Receive) -> Receive | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, send: Send) -> None:
        response = error_response(413, "RESOURCE_EXHAUSTED", f"request body is larger than {self.max_body_bytes} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


# ------------------------------------------------------------------------------------------------- rendering
def _items(scored: Scored, limit: int | None = None) -> list[dict[str, Any]]:
    return [
        {"item_id": item, "score": score}
        for item, score in zip(scored.item_ids[:limit], scored.scores[:limit], strict=True)
    ]


def _vector(values: Sequence[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


def _timed(content: Any, timings: dict[str, float]) -> JsonResponse:
    return JsonResponse(content, headers={"server-timing": server_timing(timings)})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse the body')}"
        loc = ".".join(str(p) for p in err.get("loc", ())[1:])
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


# ------------------------------------------------------------------------------------------------ app factory
def create_app(settings: Settings, clients: Clients | None = None, catalog: Catalog | None = None) -> FastAPI:
    """The REST app. With ``clients`` given the core exists at once (the caller owns and closes the clients);
    without, the lifespan opens channels and Redis from ``settings`` and closes them on shutdown."""
    catalog = catalog or Catalog(settings.models_dir, settings.model_version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = None
        if app.state.core is None:
            opened = Clients.open(settings)
            app.state.core = gw.GatewayCore(opened, catalog, settings.budget_ms)
        core: gw.GatewayCore = app.state.core
        with contextlib.suppress(EventStoreUnavailable):
            catalog.set_published(await core.clients.events.published_version())
        follow = asyncio.create_task(core.follow_published_version())
        try:
            await catalog.get().items()  # warm: the first popular answer / event pays no load
        except Exception as e:  # no bundle yet: /readyz and requests will say so
            log.warning("no model bundle to preload: %s", e)
        try:
            yield
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            if opened is not None:
                await opened.close()
                app.state.core = None

    app = FastAPI(
        title="recmesh gateway",
        version="1",
        description="Session recommendations and every stage on its own (also served over gRPC: "
        "recmesh.v1.RecommendationService).",
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    app.state.core = gw.GatewayCore(clients, catalog, settings.budget_ms) if clients is not None else None
    app.state.draining = False
    app.add_middleware(GatewayMiddleware)

    @app.exception_handler(RecmeshError)
    async def recmesh_error(request: Request, exc: RecmeshError) -> Response:
        if exc.http_status >= 500 and exc.grpc_code.name == "INTERNAL":
            log.error("internal error", exc_info=exc)
            return error_response(500, "INTERNAL", f"internal error (request_id={get_request_id()})")
        return error_response(exc.http_status, exc.grpc_code.name, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "INVALID_ARGUMENT", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, _CODE_OF_STATUS.get(exc.status_code, "UNKNOWN"), str(exc.detail))

    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": schemas.ErrorOut, "description": "Bad input (malformed JSON, wrong types, out of range)."},
        404: {"model": schemas.ErrorOut, "description": "Unknown item or model version."},
        413: {"model": schemas.ErrorOut, "description": "Body larger than 1 MiB."},
        503: {"model": schemas.ErrorOut, "description": "No useful answer: a needed backend is down."},
    }

    def core_of(request: Request) -> gw.GatewayCore:
        core = request.app.state.core
        if core is None:
            raise RecmeshError("gateway is not started")
        return core  # type: ignore[no-any-return]

    @app.post("/v1/recommend", response_model=schemas.RecommendOut, responses=errors, tags=["recommend"])
    async def recommend(body: schemas.RecommendIn, request: Request) -> Response:
        """Recommendations for a session (and/or a visitor's recorded events, or a query vector)."""
        core = core_of(request)
        o = body.options
        options = gw.RecommendOptions(
            skip_ranking=o.skip_ranking,
            candidate_count=o.candidate_count,
            exclude_item_ids=o.exclude_item_ids,
            budget_ms=o.budget_ms,
            query_vector=_vector(o.query_vector),
            include_seen=o.include_seen,
        )
        rec = await core.recommend(
            gw.RecommendRequest(body.session, body.user_id or "", body.k, options, body.model_version),
            core.budget(o.budget_ms),
            get_request_id(),
        )
        return _timed(
            {
                "items": [{"item_id": i, "score": s} for i, s in zip(rec.item_ids, rec.scores, strict=True)],
                "model_version": rec.model_version,
                "degraded": rec.degraded,
                "degradations": [{"stage": d.stage, "reason": d.reason} for d in rec.degradations],
                "unknown_item_ids": rec.unknown_item_ids,
                "session_items_dropped": rec.session_items_dropped,
                "timings": {stage: round(ms, 3) for stage, ms in rec.timings.items()},
                "recommendation_id": rec.recommendation_id,
            },
            rec.timings,
        )

    @app.post("/v1/embeddings", response_model=schemas.EmbeddingsOut, responses=errors, tags=["stages"])
    async def embeddings(body: schemas.EmbeddingsIn, request: Request) -> Response:
        """Item vectors (the embedding store)."""
        core = core_of(request)
        budget = core.budget()
        found = await core.item_embeddings(body.item_ids, body.model_version, budget, get_request_id())
        return _timed(
            {
                "model_version": found.model_version,
                "dim": found.dim,
                "embeddings": dict(zip(found.item_ids, found.vectors, strict=True)),
                "unknown_item_ids": list(dict.fromkeys(found.unknown_item_ids)),
                "degraded": found.degraded,
                "degraded_reason": found.degraded_reason,
            },
            budget.timings,
        )

    @app.get("/v1/items/{item_id}/similar", response_model=schemas.SimilarOut, responses=errors, tags=["stages"])
    async def similar(
        item_id: str,
        request: Request,
        k: int = Query(gw.DEFAULT_K, ge=1, le=gw.MAX_K),
        model_version: str = Query("", max_length=128),
    ) -> Response:
        """Items most similar to one item (never itself)."""
        core = core_of(request)
        budget = core.budget()
        found = await core.similar_items(item_id, k, model_version, budget, get_request_id())
        return _timed({"items": _items(found), "model_version": found.model_version}, budget.timings)

    @app.post("/v1/candidates", response_model=schemas.CandidatesOut, responses=errors, tags=["stages"])
    async def candidates(body: schemas.CandidatesIn, request: Request) -> Response:
        """Nearest items for a query vector or for item ids (candidate generation)."""
        core = core_of(request)
        budget = core.budget()
        found = await core.find_candidates(
            query_vector=_vector(body.query_vector),
            item_ids=body.item_ids,
            k=body.k,
            exclude_item_ids=body.exclude_item_ids,
            model_version=body.model_version,
            budget=budget,
            request_id=get_request_id(),
        )
        return _timed(
            {
                "candidates": _items(found),
                "model_version": found.model_version,
                "unknown_item_ids": found.unknown_item_ids,
            },
            budget.timings,
        )

    @app.post("/v1/rank", response_model=schemas.RankOut, responses=errors, tags=["stages"])
    async def rank(body: schemas.RankIn, request: Request) -> Response:
        """Score and order the caller's candidates for a session (ranking)."""
        core = core_of(request)
        budget = core.budget()
        ids = [c if isinstance(c, str) else c.item_id for c in body.candidates]
        scores = [0.0 if isinstance(c, str) else c.score for c in body.candidates]
        ranked = await core.rank_candidates(
            body.session, ids, scores, body.k, body.model_version, budget, get_request_id()
        )
        return _timed(
            {
                "items": _items(ranked),
                "model_version": ranked.model_version,
                "unknown_item_ids": ranked.unknown_item_ids,
            },
            budget.timings,
        )

    @app.post(
        "/v1/events",
        response_model=schemas.EventOut | schemas.EventsOut,
        responses={
            **errors,
            429: {"model": schemas.ErrorOut, "description": "A visitor over EVENT_RATE_LIMIT; nothing was stored."},
        },
        tags=["events"],
    )
    async def events(body: schemas.EventsBody, request: Request) -> Response:
        """Record one event, or ``{"events": [...]}`` (up to 500); stored before the answer, so the next
        recommendation for the visitor reflects them."""
        core = core_of(request)
        batch = body.events if isinstance(body, schemas.EventsIn) else [body]
        recorded = await core.record_events(
            [Event(e.user_id, e.item_id, e.type, e.timestamp_ms or 0, e.session_id) for e in batch]
        )
        if isinstance(body, schemas.EventsIn):
            return JsonResponse({"stored": recorded.stored, "unknown_item_ids": recorded.unknown_item_ids})
        return JsonResponse({"stored": True, "known_item": recorded.known[0]})

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        """The process is alive."""
        return JsonResponse({"status": "ok"})

    @app.get("/readyz", tags=["health"], responses={503: {"description": "A backend is not ready, or draining."}})
    async def readyz(request: Request) -> Response:
        """Ready when the three services report SERVING (grpc.health.v1) and Redis answers PING."""
        core = core_of(request)
        statuses = await core.readiness()
        if request.app.state.draining:
            statuses["gateway"] = "draining"
        ok = gw.ready(statuses) and not request.app.state.draining
        failed = {name: s for name, s in statuses.items() if s not in ("SERVING", "PONG")}
        return JsonResponse({"ready": ok, "checks": statuses, "failed": failed}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
