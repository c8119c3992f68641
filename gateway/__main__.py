"""Run the gateway: REST (uvicorn) and gRPC (grpc.aio) in one process, on one uvloop event loop.

    python -m gateway            # HTTP_PORT (8080) and GRPC_PORT (50050); see gateway/settings.py

SIGTERM/SIGINT: gRPC health NOT_SERVING and /readyz 503, keep serving DRAIN_S, then stop both servers with
SHUTDOWN_GRACE_S for in-flight requests, then close the channels and Redis, then export the spans still queued
(tracing, off unless the OTEL_* variables ask for it: serving/tracing.py, docs/tracing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator

import uvicorn
import uvloop

from gateway.app import create_app
from gateway.auth import AuthConfigError
from gateway.clients import Clients
from gateway.edge import edge_protocol
from gateway.grpc_api import create_grpc_server
from gateway.settings import Settings
from serving.gc_tuning import tune_for_serving
from serving.logs import configure_logging
from serving.tracing import asgi_middleware, configure_tracing, shutdown_tracing

log = logging.getLogger("gateway")


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: this process stops both servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    settings: Settings, stop: asyncio.Event | None = None, when_serving: Callable[[], None] | None = None
) -> None:
    """Both servers until `stop` (or SIGTERM/SIGINT); `when_serving()` runs once they are up (the process sets its
    garbage collector there; tests that run this in their own process pass nothing)."""
    stop = stop or asyncio.Event()
    clients = Clients.open(settings)
    app = create_app(settings, clients=clients)
    grpc_server, grpc_port, health = await create_grpc_server(
        app.state.core,
        f"[::]:{settings.grpc_port}",
        settings.max_message_mb,
        settings.max_connection_age_s,
        authenticator=app.state.auth,
        max_concurrent_rpcs=settings.max_in_flight,
    )
    config = uvicorn.Config(
        asgi_middleware(app, app.routes),  # tracing on: a span per HTTP request around everything; off: the app
        host="0.0.0.0",
        port=settings.http_port,
        http=edge_protocol(settings.header_timeout_s, settings.body_timeout_s),  # httptools with read timeouts
        limit_concurrency=settings.max_connections,  # connections (and tasks) over it: uvicorn's 503
        timeout_keep_alive=5,  # an idle keep-alive connection is closed after 5 s
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
    http = _HttpServer(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_task = asyncio.create_task(http.serve())
    if when_serving is not None:
        while not http.started and not http_task.done():  # the lifespan has loaded the catalogue once started
            await asyncio.sleep(0.05)
        when_serving()
    log.info("gateway serving", extra={"http_port": settings.http_port, "grpc_port": grpc_port})
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({stopped, http_task}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    log.info("shutting down: NOT_SERVING, draining %.1fs, grace %.1fs", settings.drain_s, settings.shutdown_grace_s)
    app.state.draining = True
    await health.enter_graceful_shutdown()
    if settings.drain_s > 0 and not http_task.done():
        await asyncio.sleep(settings.drain_s)
    http.should_exit = True
    await asyncio.gather(grpc_server.stop(settings.shutdown_grace_s), http_task, return_exceptions=True)
    await clients.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


def main() -> None:
    settings = Settings()
    configure_logging("gateway", settings.log_level)
    configure_tracing("gateway")
    try:
        uvloop.run(serve(settings, when_serving=tune_for_serving))
    except AuthConfigError as e:  # a configuration mistake, not a crash: one line, no traceback
        log.error("%s", e)
        sys.exit(f"gateway: {e}")
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
