"""What the three stage services share: start-up from their settings, and the process entry point.

Usage::

    # services/ranking/server.py: a service answering from the model registry
    async def create_server(settings: Settings, address: str | None = None) -> Started[CandidateRanker]:
        return await start_model_service(settings, address, CandidateRanker, RankingServicer, add_to_server, NAME)

    # services/ranking/__main__.py
    run_service("ranking", Settings(), create_server)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc.aio
import uvloop
from grpc_health.v1.health import HealthServicer
from threadpoolctl import threadpool_limits

from recmesh.registry import ModelRegistry
from serving.gc_tuning import tune_for_serving
from serving.logs import configure_logging
from serving.metrics import Metrics, start_metrics_server
from serving.server import create_server, run_while_serving, serve_until_signal
from serving.tls import TlsFiles
from serving.tracing import configure_tracing, shutdown_tracing

Core = TypeVar("Core")
Servicer = TypeVar("Servicer")
Started = tuple[grpc.aio.Server, int, HealthServicer, Core]  # the server, its bound port, its health, the core


class StageSettings(Protocol):
    """The settings every stage service has (serving.settings.CommonSettings plus its two ports)."""

    models_dir: Path
    model_version: str
    log_level: str
    max_message_mb: int
    max_connection_age_s: float
    port: int
    metrics_port: int
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    tls_server_name: str
    health_port: int


S = TypeVar("S", bound=StageSettings)


async def load_registry(settings: StageSettings) -> ModelRegistry:
    """The model registry of ``settings``, its first version loaded (off the event loop)."""
    registry = ModelRegistry(settings.models_dir, settings.model_version)
    await asyncio.to_thread(registry.load_initial)
    return registry


async def start_server(
    settings: StageSettings,
    address: str | None,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    metrics: Metrics | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """:func:`serving.server.create_server` on ``address`` (default: every interface, ``settings.port``) with the
    message size and connection age of ``settings``, mutual TLS when its TLS files are set (and then a plaintext
    health-only port when HEALTH_PORT is set)."""
    tls = TlsFiles.from_settings(settings)
    return await create_server(
        address or f"[::]:{settings.port}",
        register,
        service_names,
        settings.max_message_mb,
        settings.max_connection_age_s,
        metrics=metrics,
        tls=tls,
        health_address=f"[::]:{settings.health_port}" if tls and settings.health_port else None,
    )


async def start_model_service(
    settings: StageSettings,
    address: str | None,
    make_core: Callable[[ModelRegistry], Core],
    make_servicer: Callable[[Core], Servicer],
    add_to_server: Callable[[Servicer, grpc.aio.Server], None],
    service_name: str,
) -> Started[Core]:
    """A service answering from the model registry: registry loaded, ``make_servicer(make_core(registry))`` added
    with its generated ``add_..._to_server``, server started, and the registry's watcher (which loads new bundles)
    running until the server stops."""
    registry = await load_registry(settings)
    core = make_core(registry)
    servicer = make_servicer(core)
    server, port, health = await start_server(
        settings, address, lambda server: add_to_server(servicer, server), [service_name]
    )
    run_while_serving(server, registry.watch())
    return server, port, health, core


def run_service(name: str, settings: S, create: Callable[[S], Awaitable[Started[Any]]]) -> None:
    """The process: JSON logs as ``name``, tracing if the OTEL_* variables ask for it (serving.tracing), /metrics on
    ``settings.metrics_port``, then ``create(settings)`` served until SIGTERM/SIGINT (NOT_SERVING, drain, stop,
    background work cleaned up), then the spans still queued exported."""
    configure_logging(name, settings.log_level)
    configure_tracing(name)
    # One BLAS thread: a request's products are small (a few hundred rows), and a second BLAS thread spinning for
    # a core the other services need made an exact scan of 20k rows 10-20x slower on a busy 2-core machine.
    threadpool_limits(limits=1)
    start_metrics_server(settings.metrics_port)
    try:
        uvloop.run(_serve(settings, create))
    finally:
        shutdown_tracing()


async def _serve(settings: S, create: Callable[[S], Awaitable[Started[Any]]]) -> None:
    server, _port, health, _core = await create(settings)
    tune_for_serving()  # the model is loaded: leave it out of every collection
    await serve_until_signal(server, health)
