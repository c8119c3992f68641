"""The REST/JSON face of the gateway: a FastAPI app factory over :class:`gateway.core.GatewayCore`.

    app = create_app(Settings())                 # its lifespan opens (and closes) channels and Redis
    app = create_app(settings, clients=clients)  # or bring your own backends (tests, gateway/__main__.py)

Every answer carries ``x-request-id`` (the caller's, or a new one, also sent on every hop; see
:mod:`gateway.middleware`); recommendations and stage calls carry ``Server-Timing``. Errors are
``{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message", "details", "request_id"}}`` with the status
their class knows (:mod:`gateway.rest_errors`, docs/errors.md), malformed JSON and wrong types included (400, not
422).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.responses import Response

from gateway import auth, auth_http, readiness, schemas
from gateway.budget import server_timing
from gateway.clients import Clients, Scored
from gateway.core import GatewayCore
from gateway.edge import EdgeLimits, EdgeMiddleware
from gateway.events import Event
from gateway.fast_path import RecommendFastPath
from gateway.item_catalog import Written
from gateway.json_response import JsonResponse
from gateway.middleware import GatewayMiddleware
from gateway.model_versions import ModelVersions
from gateway.recommend import ItemExplanation, RecommendOptions, RecommendRequest
from gateway.rest_errors import install_error_handlers
from gateway.rules import BoostRule, DiversityRule, PinRule, RuleOptions
from gateway.settings import Settings
from gateway.version_pointer import follow_published_version, sync_published_version
from serving import filters, limits
from serving.errors import RecmeshError

log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorOut, "description": "Bad input (malformed JSON, wrong types, out of range)."},
    404: {"model": schemas.ErrorOut, "description": "Unknown item or model version."},
    401: {"model": schemas.ErrorOut, "description": "No API key, or not a valid one (WWW-Authenticate: Bearer)."},
    403: {"model": schemas.ErrorOut, "description": "The API key lacks the scope the call needs."},
    429: {"model": schemas.ErrorOut, "description": "The API key is over its rate limit (Retry-After)."},
    413: {"model": schemas.ErrorOut, "description": f"Body larger than {limits.MAX_BODY_BYTES} bytes."},
    408: {"model": schemas.ErrorOut, "description": "The body did not arrive in time (BODY_TIMEOUT_S); closed."},
    415: {"model": schemas.ErrorOut, "description": "The body is not JSON (Content-Type application/json)."},
    500: {"model": schemas.ErrorOut, "description": "A bug of ours: the message names only the request id."},
    503: {
        "model": schemas.ErrorOut,
        "description": "No useful answer: a needed backend is down, or the gateway is overloaded and shed the "
        "request at once (Retry-After).",
    },
}


# ------------------------------------------------------------------------------------------------- rendering
def _items(scored: Scored) -> list[dict[str, Any]]:
    return [{"item_id": item, "score": score} for item, score in zip(scored.item_ids, scored.scores, strict=True)]


def _scored_body(scored: Scored, key: str) -> dict[str, Any]:
    """A candidates or ranking answer: the items under ``key``, the version, the ids the model does not know."""
    return {key: _items(scored), "model_version": scored.model_version, "unknown_item_ids": scored.unknown_item_ids}


def _vector(values: Sequence[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


def _timed(content: Any, timings: dict[str, float]) -> JsonResponse:
    return JsonResponse(content, headers={"server-timing": server_timing(timings)})


def _core(request: Request) -> GatewayCore:
    core = request.app.state.core
    if core is None:
        raise RecmeshError("gateway is not started")
    return core  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------ app factory
CATALOG_FIRST_READ_S = 15.0  # at start: wait this long for the whole live catalogue


def create_app(settings: Settings, clients: Clients | None = None, versions: ModelVersions | None = None) -> FastAPI:
    """The REST app. With ``clients`` given the core exists at once (the caller owns and closes the clients);
    without, the lifespan opens channels and Redis from ``settings`` and closes them on shutdown."""
    versions = versions or ModelVersions(settings.models_dir, settings.model_version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = None
        if app.state.core is None:
            opened = Clients.open(settings)
            app.state.core = GatewayCore.build(opened, versions, settings.budget_ms)
        store = app.state.core.clients.events
        await sync_published_version(store, versions)
        follow = asyncio.create_task(follow_published_version(store, versions))
        try:
            await versions.get().items()  # warm: the first popular answer / event pays no load
        except Exception as e:  # no bundle yet: /readyz and requests will say so
            log.warning("no model bundle to preload: %s", e)
        clients = app.state.core.clients
        # the whole live catalogue before the first request (a request waits only REDIS_TIMEOUT_MS for it)
        await clients.catalog.refresh(timeout_s=CATALOG_FIRST_READ_S)
        filters.warm_up()  # the filter parser's tables, before the first filtered request
        await clients.experiments.load_now()  # the running experiment, if any, from the first request on
        background = [follow, asyncio.create_task(clients.experiments.run())]
        background.append(asyncio.create_task(clients.experiment_counts.run()))
        try:
            yield
        finally:
            for task in background:  # the counts' last flush happens on cancel
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        # Tracing's request span is serving.tracing's ASGI middleware, outermost (gateway/__main__.py): FastAPI's
        # own (newer versions) would be a second server span, not parented to it. Older versions ignore this.
        telemetry={"tracing": False},
    )
    app.state.core = GatewayCore.build(clients, versions, settings.budget_ms) if clients is not None else None
    app.state.draining = False
    app.state.auth = auth.Authenticator.from_settings(settings)  # no keys and not AUTH=disabled: no gateway
    if settings.rest_fast_path:  # added first: it runs inside GatewayMiddleware (request id, body cap, metrics)
        app.add_middleware(RecommendFastPath, answer=recommend_answer)
    app.add_middleware(auth_http.AuthMiddleware, auth=app.state.auth)  # every route, the fast one included
    app.add_middleware(EdgeMiddleware, limits=EdgeLimits.of(settings))  # content type, shedding, body deadline
    app.add_middleware(GatewayMiddleware)
    install_error_handlers(app)
    _add_recommend_route(app)
    _add_stage_routes(app)
    _add_event_route(app)
    _add_catalog_routes(app)
    _add_operations_routes(app)
    _document_no_422(app)
    return app


def _document_no_422(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; this gateway answers bad input 400 (the error
    shape above), so the document drops the 422 and its schemas rather than promise an answer never sent."""
    framework_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = framework_openapi()
            for operations in document["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                document.get("components", {}).get("schemas", {}).pop(unused, None)
            _document_api_keys(document)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _document_api_keys(document: dict[str, Any]) -> None:
    """Every /v1 operation takes an API key (gateway/auth_http.py): say so, with the scope each needs, so clients
    and fuzzers generated from the document send one. Probes and /metrics stay open."""
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key, rk_<id>_<secret>."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The same key."},
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            needs_key, scope = auth_http.scope_of(path, method.upper())
            if not needs_key:
                continue
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            if scope is not None:
                operation["description"] = (
                    f"{operation.get('description', '')}\n\nNeeds an API key with the scope `{scope}`"
                    + (" (and `history:read` when the request names a `user_id`)." if scope == "recommend" else ".")
                ).strip()
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
            operation["responses"].setdefault(
                "401", {"description": "No API key, or an unknown or expired one.", "content": error}
            )
            operation["responses"].setdefault(
                "403", {"description": "The key lacks the scope this call needs.", "content": error}
            )


async def recommend_answer(core: GatewayCore, body: schemas.RecommendIn) -> JsonResponse:
    """POST /v1/recommend's answer to a body of the right shape (also what gateway/fast_path.py sends)."""
    if body.user_id:  # a visitor's history shapes the answer (and its unknown_item_ids): theirs to read
        auth.require("history:read")
    o = body.options
    options = RecommendOptions(
        skip_ranking=o.skip_ranking,
        candidate_count=o.candidate_count,
        exclude_item_ids=o.exclude_item_ids,
        budget_ms=o.budget_ms,
        query_vector=_vector(o.query_vector),
        include_seen=o.include_seen,
        sources=o.sources,
        rules=RuleOptions(
            filter=o.filter or "",
            filter_strict=o.filter_strict,
            boosts=[BoostRule(b.filter, b.multiply, b.add, b.include, b.name) for b in o.boosts],
            pins=[PinRule(p.item_id, p.position) for p in o.pins],
            diversity=DiversityRule(o.diversity.attribute, o.diversity.max_per_value) if o.diversity else None,
        ),
        explain=o.explain,
    )
    rec = await core.recommender.recommend(
        RecommendRequest(
            body.session,
            body.user_id or "",
            body.k,
            options,
            body.model_version,
            body.session_id or "",
            body.forced_variant or "",
        )
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
            "filled_from_popular": rec.filled_from_popular,
            "diversity_relaxed": rec.diversity_relaxed,
            "experiment": rec.experiment,
            "variant": rec.variant,
            **({"explanations": [_explanation(e) for e in rec.explanations]} if rec.explanations is not None else {}),
        },
        rec.timings,
    )


def _explanation(e: ItemExplanation) -> dict[str, Any]:
    return {
        "item_id": e.item_id,
        "sources": e.sources,
        "logit": e.logit,
        "intercept": e.intercept,
        "contributions": [{"feature": name, "value": value} for name, value in e.contributions],
        "other": e.other,
        "rules": e.rules,
    }


def _add_recommend_route(app: FastAPI) -> None:
    @app.post("/v1/recommend", response_model=schemas.RecommendOut, responses=ERROR_RESPONSES, tags=["recommend"])
    async def recommend(body: schemas.RecommendIn, request: Request) -> Response:
        """Recommendations for a session (and/or a visitor's recorded events, or a query vector)."""
        return await recommend_answer(_core(request), body)


def _add_stage_routes(app: FastAPI) -> None:
    @app.post("/v1/embeddings", response_model=schemas.EmbeddingsOut, responses=ERROR_RESPONSES, tags=["stages"])
    async def embeddings(body: schemas.EmbeddingsIn, request: Request) -> Response:
        """Item vectors (the embedding store)."""
        answer = await _core(request).stages.item_embeddings(body.item_ids, body.model_version)
        found = answer.result
        return _timed(
            {
                "model_version": found.model_version,
                "dim": found.dim,
                "embeddings": dict(zip(found.item_ids, found.vectors, strict=True)),
                "unknown_item_ids": list(dict.fromkeys(found.unknown_item_ids)),
                "degraded": found.degraded,
                "degraded_reason": found.degraded_reason,
            },
            answer.timings,
        )

    @app.get(
        "/v1/items/{item_id}/similar", response_model=schemas.SimilarOut, responses=ERROR_RESPONSES, tags=["stages"]
    )
    async def similar(
        item_id: str,
        request: Request,
        k: int = Query(
            limits.DEFAULT_K,
            description=f"Number of items. At most {limits.MAX_K}.",
            json_schema_extra={"minimum": 1, "maximum": limits.MAX_K},
        ),
        model_version: str = Query("", json_schema_extra={"maxLength": limits.MAX_VERSION_LEN}),
    ) -> Response:
        """Items most similar to one item (never itself)."""
        answer = await _core(request).stages.similar_items(item_id, k, model_version)
        return _timed({"items": _items(answer.result), "model_version": answer.result.model_version}, answer.timings)

    @app.post("/v1/candidates", response_model=schemas.CandidatesOut, responses=ERROR_RESPONSES, tags=["stages"])
    async def candidates(body: schemas.CandidatesIn, request: Request) -> Response:
        """Nearest items for a query vector or for item ids (candidate generation)."""
        answer = await _core(request).stages.find_candidates(
            query_vector=_vector(body.query_vector),
            item_ids=body.item_ids,
            k=body.k,
            exclude_item_ids=body.exclude_item_ids,
            model_version=body.model_version,
        )
        return _timed(_scored_body(answer.result, "candidates"), answer.timings)

    @app.post("/v1/rank", response_model=schemas.RankOut, responses=ERROR_RESPONSES, tags=["stages"])
    async def rank(body: schemas.RankIn, request: Request) -> Response:
        """Score and order the caller's candidates for a session (ranking)."""
        ids = [c if isinstance(c, str) else c.item_id for c in body.candidates]
        scores = [0.0 if isinstance(c, str) else c.score for c in body.candidates]
        answer = await _core(request).stages.rank_candidates(body.session, ids, scores, body.k, body.model_version)
        return _timed(_scored_body(answer.result, "items"), answer.timings)


def _add_event_route(app: FastAPI) -> None:
    rate_limited = {"model": schemas.ErrorOut, "description": "A visitor over EVENT_RATE_LIMIT; nothing was stored."}

    @app.post(
        "/v1/events",
        response_model=schemas.EventOut | schemas.EventsOut,
        responses={**ERROR_RESPONSES, 429: rate_limited},
        tags=["events"],
        description=f'Record one event, or `{{"events": [...]}}` (up to {limits.MAX_EVENTS_PER_CALL}); stored '
        "before the answer, so the next recommendation for the visitor reflects them.",
    )
    async def events(body: schemas.EventsBody, request: Request) -> Response:
        batch = body.events if isinstance(body, schemas.EventsIn) else [body]
        recorded = await _core(request).events.record(
            [Event(e.user_id, e.item_id, e.type, e.timestamp_ms or 0, e.session_id) for e in batch],
            max_events=limits.MAX_EVENTS_PER_CALL,
            unit="call",
        )
        if isinstance(body, schemas.EventsIn):
            return JsonResponse({"stored": recorded.stored, "unknown_item_ids": recorded.unknown_item_ids})
        return JsonResponse({"stored": True, "known_item": recorded.known[0]})


def _add_catalog_routes(app: FastAPI) -> None:
    def written(answer: Written) -> JsonResponse:
        return JsonResponse({"count": answer.count, "catalog_seq": answer.catalog_seq})

    write: dict[str, Any] = {
        "response_model": schemas.CatalogWriteOut,
        "responses": ERROR_RESPONSES,
        "tags": ["catalog"],
    }

    @app.put("/v1/items/{item_id}", **write)
    async def put_item(item_id: str, body: schemas.ItemAttributesIn, request: Request) -> Response:
        """Create an item of the live catalogue or replace its attributes; the next recommendation sees it."""
        return written(await _core(request).items.upsert([(item_id, body.attributes)]))

    @app.patch("/v1/items/{item_id}", **write)
    async def patch_item(item_id: str, body: schemas.ItemAttributesIn, request: Request) -> Response:
        """Change some attributes of an item (null removes one); the next recommendation sees it."""
        return written(await _core(request).items.upsert([(item_id, body.attributes)], merge=True))

    @app.delete("/v1/items/{item_id}", **write)
    async def delete_item(item_id: str, request: Request) -> Response:
        """Remove an item's catalogue entry (its attributes); the model still knows it."""
        return written(await _core(request).items.delete([item_id]))

    @app.post("/v1/items", **write)
    async def upsert_items(body: schemas.UpsertItemsIn, request: Request) -> Response:
        """Create or change up to 1,000 items in one atomic write."""
        items = [(item.item_id, item.attributes) for item in body.items]
        return written(await _core(request).items.upsert(items, merge=body.merge))

    @app.post("/v1/items:delete", **write)
    async def delete_items(body: schemas.DeleteItemsIn, request: Request) -> Response:
        """Remove up to 1,000 items' catalogue entries in one atomic write."""
        return written(await _core(request).items.delete(body.item_ids))

    @app.get("/v1/items/{item_id}", response_model=schemas.CatalogItemOut, responses=ERROR_RESPONSES, tags=["catalog"])
    async def get_item(item_id: str, request: Request) -> Response:
        """An item's catalogue attributes, as every replica now sees them."""
        attributes, known = await _core(request).items.get(item_id)
        return JsonResponse({"item_id": item_id, "attributes": attributes, "known_to_model": known})


def _add_operations_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], response_model=schemas.HealthOut)
    async def healthz() -> Response:
        """The process is alive."""
        return JsonResponse({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=schemas.ReadyOut,
        responses={503: {"model": schemas.ReadyOut, "description": "Draining, or no model loaded yet."}},
    )
    async def readyz(request: Request) -> Response:
        """Ready (200) whenever this process can answer, degraded included: a stage or Redis that is down is
        listed under ``degraded``, not a 503. 503 only while draining or before a model is loaded."""
        core = _core(request)
        statuses = await readiness.check_backends(core.clients)
        ok, reason = readiness.can_answer(core.versions, request.app.state.draining)
        body: dict[str, Any] = {"ready": ok, "checks": statuses, "degraded": readiness.degraded(statuses)}
        if not ok:
            body["reason"] = reason
        return JsonResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
