"""Settings shared by every process: where bundles live and which version to serve.

Each process has one settings object, read from the environment once at start-up (pydantic-settings fails fast
with a message naming the bad variable).

Usage::

    class Settings(CommonSettings):   # a process adds its own variables
        port: int = Field(50053, validation_alias="PORT")
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    models_dir: Path = Field(
        Path("models"),
        validation_alias="RECMESH_MODELS_DIR",
        description="Directory holding versioned bundles (models/<version>/).",
    )
    model_version: str = Field(
        "",
        validation_alias="RECMESH_MODEL_VERSION",
        description="Version to serve; empty means the newest bundle in models_dir.",
    )
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL", description="Python logging level.")
    max_message_mb: int = Field(4, validation_alias="MAX_MESSAGE_MB", description="gRPC message size cap.")
    max_connection_age_s: float = Field(
        30.0,
        ge=0,
        validation_alias="MAX_CONNECTION_AGE_S",
        description="A gRPC server closes each client connection after this long (calls in flight get 5 s more), "
        "so clients re-resolve DNS and spread over replicas added since; 0 = never.",
    )
    tls_cert_file: Path | None = Field(
        None,
        validation_alias="TLS_CERT_FILE",
        description="Mutual TLS between the gateway and the services (with TLS_KEY_FILE and TLS_CA_FILE): this "
        "process' certificate (PEM). Unset: plaintext (local use). docs/security.md.",
    )
    tls_key_file: Path | None = Field(
        None, validation_alias="TLS_KEY_FILE", description="The private key of TLS_CERT_FILE (PEM)."
    )
    tls_ca_file: Path | None = Field(
        None,
        validation_alias="TLS_CA_FILE",
        description="The CA every peer's certificate must be signed by (PEM): servers refuse clients without one.",
    )
    tls_server_name: str = Field(
        "",
        validation_alias="TLS_SERVER_NAME",
        description="The name clients check a service's certificate for (it must be among the certificate's "
        "names); empty: the host dialled.",
    )
    health_port: int = Field(
        0,
        ge=0,
        validation_alias="HEALTH_PORT",
        description="With TLS on, a second, plaintext gRPC port serving only grpc.health.v1 (Kubernetes' gRPC "
        "probes speak no TLS); 0 = none.",
    )
