"""Environment of the gateway process.

Upstream addresses accept one "host:port", a comma-separated list of replicas ("h1:p1,h2:p2"), or a gRPC URI
such as "dns:///ranking:50053" (a Kubernetes headless Service); requests are spread round robin.
"""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from gateway.events import parse_weights
from serving import limits
from serving.settings import CommonSettings


class Settings(CommonSettings):
    http_port: int = Field(8080, validation_alias="HTTP_PORT", description="REST/JSON, /metrics, health.")
    grpc_port: int = Field(50050, validation_alias="GRPC_PORT", description="RecommendationService.")
    embedding_store_addr: str = Field(
        "localhost:50051",
        validation_alias="EMBEDDING_STORE_ADDR",
        description="The embedding store service: host:port, replicas as h1:p1,h2:p2, or a gRPC URI "
        "(dns:///embedding-store:50051).",
    )
    candidate_generation_addr: str = Field(
        "localhost:50052",
        validation_alias="CANDIDATE_GENERATION_ADDR",
        description="The candidate generation service: host:port, replicas as h1:p1,h2:p2, or a gRPC URI "
        "(dns:///candidate-generation:50052).",
    )
    ranking_addr: str = Field(
        "localhost:50053",
        validation_alias="RANKING_ADDR",
        description="The ranking service: host:port, replicas as h1:p1,h2:p2, or a gRPC URI (dns:///ranking:50053).",
    )
    stage_batching: bool = Field(
        True,
        validation_alias="STAGE_BATCHING",
        description="Send the calls to a stage that arrive while one is in flight as one batch call (no timer: "
        "a lone call goes out at once). Off: one RPC per call.",
    )
    batches_in_flight: int = Field(
        0,
        ge=0,
        le=64,
        validation_alias="BATCHES_IN_FLIGHT",
        description="Batch calls in flight per stage at once; 0 = one per replica address (four for a DNS name).",
    )
    rest_fast_path: bool = Field(
        True,
        validation_alias="REST_FAST_PATH",
        description="Answer POST /v1/recommend in one plain ASGI step (gateway/fast_path.py) instead of through "
        "FastAPI's routing and dependency layers; same schema, same answers and errors.",
    )
    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias="REDIS_URL",
        description="The durable store: visitors' events and the version pointer (AOF + noeviction: "
        "docs/reliability.md).",
    )
    budget_ms: int = Field(
        limits.DEFAULT_BUDGET_MS, validation_alias="BUDGET_MS", description="Default end-to-end budget (ms)."
    )
    # The edge (gateway/edge.py, docs/security.md "The edge").
    header_timeout_s: float = Field(
        5.0,
        gt=0,
        validation_alias="HEADER_TIMEOUT_S",
        description="A connection whose request headers are not complete this long after its first byte (or its "
        "opening) is answered 408 and closed.",
    )
    body_timeout_s: float = Field(
        5.0,
        gt=0,
        validation_alias="BODY_TIMEOUT_S",
        description="A request body not complete this long after its headers: 408 and the connection closed.",
    )
    max_connections: int = Field(
        4096,
        ge=1,
        validation_alias="MAX_CONNECTIONS",
        description="Open HTTP connections (uvicorn's limit_concurrency): a request on a connection over it is "
        "answered 503 by uvicorn. Keep it under the process' open-file limit.",
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        validation_alias="MAX_IN_FLIGHT",
        description="REST requests handled at once; one more is answered 503 + Retry-After at once "
        '(recmesh_shed_requests_total{reason="concurrency"}). Also the gRPC face\'s maximum concurrent RPCs '
        "(RESOURCE_EXHAUSTED over it).",
    )
    shed_queue_ms: int = Field(
        0,
        ge=0,
        validation_alias="SHED_QUEUE_MS",
        description="A REST request that waited longer than this before it could be handled is answered 503 + "
        "Retry-After at once (its budget is gone); 0 = BUDGET_MS.",
    )
    shed_loop_lag_ms: int = Field(
        100,
        ge=1,
        validation_alias="SHED_LOOP_LAG_MS",
        description="While the event loop runs later than this (CPU saturated), new REST requests are answered "
        "503 + Retry-After at once.",
    )
    redis_timeout_ms: int = Field(
        50, validation_alias="REDIS_TIMEOUT_MS", description="Redis socket timeout for event reads and writes."
    )
    shutdown_grace_s: float = Field(
        5.0, validation_alias="SHUTDOWN_GRACE_S", description="After SIGTERM (and drain), time in-flight requests get."
    )
    drain_s: float = Field(
        0.0, validation_alias="DRAIN_S", description="After SIGTERM, keep serving (NOT_SERVING, /readyz 503) this long."
    )
    event_weights: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=lambda: dict(limits.DEFAULT_EVENT_WEIGHTS),
        validation_alias="EVENT_WEIGHTS",
        description='Weight of each event type in the session vector, e.g. "view=1,click=1.5,add_to_cart=2,'
        'purchase=3" (the default); types not named keep their default; weights are numbers > 0.',
    )
    events_per_user: int = Field(
        limits.DEFAULT_EVENTS_PER_VISITOR,
        ge=1,
        le=10_000,
        validation_alias="EVENTS_PER_USER",
        description="Events kept per visitor.",
    )
    event_rate_limit: int = Field(
        limits.DEFAULT_EVENT_RATE_LIMIT,
        ge=0,
        validation_alias="EVENT_RATE_LIMIT",
        description="Events a visitor may send per second (0 = no limit); a call over it stores nothing (429).",
    )

    auth: Literal["keys", "disabled"] = Field(
        "keys",
        validation_alias="AUTH",
        description="keys: every /v1 call and every RecommendationService method needs an API key from "
        "AUTH_KEYS_FILE (the gateway does not start without one); disabled: anyone may do anything (local use, "
        "tests). docs/security.md.",
    )
    auth_keys_file: Path | None = Field(
        None,
        validation_alias="AUTH_KEYS_FILE",
        description="The API keys (JSON: id, sha256 of the key, scopes, rate_limit, burst, expires), re-read when "
        "it changes; mounted from a Secret. `python -m gateway.auth new <id> <scope>...` makes a key.",
    )

    @field_validator("event_weights", mode="before")
    @classmethod
    def _weights(cls, value: object) -> dict[str, float]:
        return parse_weights(value)  # type: ignore[arg-type]
