"""Environment of the candidate-generation process.

Usage::

    settings = Settings()   # PORT, METRICS_PORT, REDIS_URL, REDIS_TIMEOUT_MS and serving.settings.CommonSettings'
"""

from pydantic import Field

from serving.settings import CommonSettings


class Settings(CommonSettings):
    port: int = Field(50052, validation_alias="PORT", description="gRPC port.")
    metrics_port: int = Field(9102, validation_alias="METRICS_PORT", description="Prometheus port; 0 = off.")
    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias="REDIS_URL",
        description="The durable store holding the live item catalogue (filters and availability); empty = no "
        "live catalogue (a filter then sees no attributes).",
    )
    redis_timeout_ms: int = Field(
        20,
        gt=0,
        validation_alias="REDIS_TIMEOUT_MS",
        description="Past this, a request is answered with the catalogue as last read (and says it may be stale).",
    )
