"""Environment of the gateway process.

Upstream addresses accept one "host:port", a comma-separated list of replicas ("h1:p1,h2:p2"), or a gRPC URI
such as "dns:///ranking:50053" (a Kubernetes headless Service); requests are spread round robin.
"""

from pydantic import Field

from recmesh.settings import CommonSettings


class Settings(CommonSettings):
    http_port: int = Field(8080, validation_alias="HTTP_PORT", description="REST/JSON, /metrics, health.")
    grpc_port: int = Field(50050, validation_alias="GRPC_PORT", description="RecommendationService.")
    embedding_store_addr: str = Field("localhost:50051", validation_alias="EMBEDDING_STORE_ADDR")
    candidate_generation_addr: str = Field("localhost:50052", validation_alias="CANDIDATE_GENERATION_ADDR")
    ranking_addr: str = Field("localhost:50053", validation_alias="RANKING_ADDR")
    redis_url: str = Field(
        "redis://localhost:6379/0", validation_alias="REDIS_URL", description="Events and version pointer."
    )
    budget_ms: int = Field(200, validation_alias="BUDGET_MS", description="Default end-to-end budget.")
    redis_timeout_ms: int = Field(
        50, validation_alias="REDIS_TIMEOUT_MS", description="Redis socket timeout for event reads and writes."
    )
    shutdown_grace_s: float = Field(
        5.0, validation_alias="SHUTDOWN_GRACE_S", description="After SIGTERM (and drain), time in-flight requests get."
    )
    drain_s: float = Field(
        0.0, validation_alias="DRAIN_S", description="After SIGTERM, keep serving (NOT_SERVING, /readyz 503) this long."
    )
