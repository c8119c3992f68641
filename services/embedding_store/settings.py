"""Environment of the embedding-store process.

Usage::

    settings = Settings()   # PORT, METRICS_PORT, REDIS_*, LRU_SIZE, ... and serving.settings.CommonSettings'
"""

from pydantic import Field

from recmesh.redis_layout import VECTOR_TTL_S
from serving.settings import CommonSettings


class Settings(CommonSettings):
    port: int = Field(50051, validation_alias="PORT", description="gRPC port.")
    metrics_port: int = Field(9101, validation_alias="METRICS_PORT", description="Prometheus port; 0 = off.")
    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias="REDIS_URL",
        description="The durable store: the published version pointer (and the vectors when REDIS_CACHE_URL is empty).",
    )
    redis_cache_url: str = Field(
        "",
        validation_alias="REDIS_CACHE_URL",
        description="Shared vector cache (an allkeys-lru Redis, no persistence; docs/reliability.md); empty = "
        "REDIS_URL.",
    )
    lru_size: int = Field(100_000, ge=0, validation_alias="LRU_SIZE", description="In-process cache, in vectors.")
    redis_timeout_ms: int = Field(
        20, gt=0, validation_alias="REDIS_TIMEOUT_MS", description="Past this, answer from the bundle."
    )
    redis_retry_after_ms: int = Field(
        1000,
        gt=0,
        validation_alias="REDIS_RETRY_AFTER_MS",
        description="After a Redis failure or timeout, serve from the bundle this long before trying Redis again.",
    )
    redis_vector_ttl_s: int = Field(
        VECTOR_TTL_S,
        gt=0,
        validation_alias="REDIS_VECTOR_TTL_S",
        description="TTL of vectors written back to Redis (publish sets the same default); they can be rebuilt.",
    )
    version_refresh_ms: int = Field(
        1000,
        gt=0,
        validation_alias="VERSION_REFRESH_MS",
        description="How often the published version pointer (recmesh:current_version) is re-read from Redis.",
    )
