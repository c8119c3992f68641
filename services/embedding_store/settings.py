"""Environment of the embedding-store process."""

from pydantic import Field

from recmesh.settings import CommonSettings


class Settings(CommonSettings):
    port: int = Field(50051, validation_alias="PORT", description="gRPC port.")
    metrics_port: int = Field(9101, validation_alias="METRICS_PORT", description="Prometheus port; 0 = off.")
    redis_url: str = Field(
        "redis://localhost:6379/0", validation_alias="REDIS_URL", description="Shared vector cache."
    )
    lru_size: int = Field(100_000, validation_alias="LRU_SIZE", description="In-process cache, in vectors.")
    redis_timeout_ms: int = Field(
        20, validation_alias="REDIS_TIMEOUT_MS", description="Past this, answer from the bundle."
    )
