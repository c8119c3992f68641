"""Environment of the ranking process.

Usage::

    settings = Settings()   # PORT, METRICS_PORT and serving.settings.CommonSettings' variables
"""

from pydantic import Field

from serving.settings import CommonSettings


class Settings(CommonSettings):
    port: int = Field(50053, validation_alias="PORT", description="gRPC port.")
    metrics_port: int = Field(9103, validation_alias="METRICS_PORT", description="Prometheus port; 0 = off.")
