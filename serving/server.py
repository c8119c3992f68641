"""gRPC servers for the services and the gateway: built, served until SIGTERM, drained, stopped.

Every server built here runs serving.interceptor.RpcInterceptor: request ids, metrics and error statuses for
every method, so handlers just raise serving.errors classes. With tracing on (serving.tracing), OpenTelemetry's
server interceptor goes first, so each call's span encloses everything the call does, its error status included.

Usage::

    server, port, health = await create_server("[::]:50051", register, [SERVICE_NAME])
    await serve_until_signal(server, health)          # SIGTERM/SIGINT -> NOT_SERVING -> drain -> stop

Clients' channels are serving.channels' (``make_channel`` and friends are importable from here too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2
from grpc_health.v1 import health_pb2_grpc as health_grpc
from grpc_reflection.v1alpha import reflection

from serving.channels import SERVICE_CONFIG, channel_options, make_channel, message_options, resolve_target
from serving.interceptor import RpcInterceptor
from serving.metrics import Metrics
from serving.tls import TlsFiles, server_credentials
from serving.tracing import server_interceptors

__all__ = [
    "SERVICE_CONFIG",  # the client side, re-exported: the gateway and older callers import it from here
    "channel_options",
    "make_channel",
    "resolve_target",
    "create_server",
    "run_while_serving",
    "serve_until_signal",
    "server_options",
    "shutdown",
]

logger = logging.getLogger(__name__)

CONNECTION_AGE_GRACE_MS = 5000  # calls still running when a connection reaches its maximum age


def server_options(max_message_mb: int = 4, max_connection_age_s: float = 30.0) -> list[tuple[str, Any]]:
    """Message size limits and a maximum connection age. gRPC clients re-resolve a name only when a connection
    breaks; ending every connection after ``max_connection_age_s`` (GOAWAY, calls in flight get a grace) makes
    the gateway's round_robin pick up replicas an autoscaler added since (0 = never)."""
    options = message_options(max_message_mb)
    if max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_MS),
        ]
    return options


async def create_server(
    address: str,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    max_message_mb: int = 4,
    max_connection_age_s: float = 30.0,
    *,
    metrics: Metrics | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    tls: TlsFiles | None = None,
    health_address: str | None = None,
    maximum_concurrent_rpcs: int | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build, bind and start an asyncio gRPC server with :class:`RpcInterceptor` in front of every method.

    ``register(server)`` adds the servicers; the library's health servicer (SERVING for "" and every name in
    ``service_names``) and reflection (those names + health + reflection) are added here. ``address`` may use
    port 0; the bound port is returned. See :func:`server_options` for ``max_connection_age_s``. ``metrics``
    (default: the process-wide families) goes to the interceptor. ``interceptors`` run inside it (the gateway's
    authentication): an error they raise is answered, counted and logged by RpcInterceptor like a handler's.

    With ``tls`` the port is mutual TLS (serving.tls: a client without a certificate from the CA is refused), and
    ``health_address`` (if given) a plaintext port serving only the same health servicer, for probes that speak
    no TLS; it stops when the server does.
    """
    server = grpc.aio.server(
        interceptors=[*server_interceptors(), RpcInterceptor(metrics), *interceptors],  # tracing's only when on
        options=server_options(max_message_mb, max_connection_age_s),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,  # None = no cap; over it: RESOURCE_EXHAUSTED at once
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_secure_port(address, server_credentials(tls)) if tls else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {address!r}")
    await server.start()
    if health_address:
        await _start_health_only(server, health_servicer, health_address)
    security = "mutual TLS" if tls else "plaintext"
    logger.info(
        "gRPC server listening on %s (port %d, %s)", address, port, security, extra={"services": list(service_names)}
    )
    return server, port, health_servicer


async def _start_health_only(server: grpc.aio.Server, servicer: health.aio.HealthServicer, address: str) -> None:
    """A plaintext server with only ``servicer`` (what the main server reports), stopped with ``server``."""
    probes = grpc.aio.server()
    health_grpc.add_HealthServicer_to_server(servicer, probes)
    if probes.add_insecure_port(address) == 0:
        raise RuntimeError(f"could not bind the health port {address!r}")
    await probes.start()

    async def stop_probes() -> None:
        await probes.stop(None)

    run_while_serving(server, cleanup=stop_probes)


# The supervisor tasks of run_while_serving, by server: strong references (the loop keeps only weak ones), and
# what serve_until_signal waits for once the server stopped.
_supervisors: dict[grpc.aio.Server, set[asyncio.Task[None]]] = {}


def run_while_serving(
    server: grpc.aio.Server,
    *work: Coroutine[Any, Any, None],
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run background `work` (e.g. a model watcher) while `server` serves; once it terminates, cancel the work and
    await `cleanup` (e.g. closing a Redis client). Stopping the server is then all a caller has to do."""

    async def supervise() -> None:
        tasks = [asyncio.create_task(w) for w in work]
        try:
            await server.wait_for_termination()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if cleanup is not None:
                await cleanup()

    supervisors = _supervisors.setdefault(server, set())
    supervisor = asyncio.create_task(supervise())
    supervisors.add(supervisor)
    supervisor.add_done_callback(lambda task: _forget(server, task))


def _forget(server: grpc.aio.Server, supervisor: asyncio.Task[None]) -> None:
    supervisors = _supervisors.get(server, set())
    supervisors.discard(supervisor)
    if not supervisors:
        _supervisors.pop(server, None)


async def shutdown(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    grace_s: float = 5.0,
    drain_s: float = 0.0,
) -> None:
    """Mark every service NOT_SERVING, keep serving ``drain_s`` (so balancers notice), then stop with
    ``grace_s`` for in-flight RPCs. Keep drain_s + grace_s below Kubernetes' termination grace period."""
    await health_servicer.enter_graceful_shutdown()
    if drain_s > 0:
        await asyncio.sleep(drain_s)
    await server.stop(grace_s)


async def serve_until_signal(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    grace_s: float = 5.0,
    drain_s: float = 0.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set, or the server terminates), then :func:`shutdown`; return
    once the work :func:`run_while_serving` started for the server is cancelled and cleaned up."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        stopped = asyncio.ensure_future(stop.wait())
        terminated = asyncio.ensure_future(server.wait_for_termination())
        await asyncio.wait({stopped, terminated}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()  # never cancel `terminated`: cancelling it cancels the server's own shutdown
        if stop.is_set():
            logger.info("shutdown requested: NOT_SERVING, draining %.1fs, grace %.1fs", drain_s, grace_s)
            await shutdown(server, health_servicer, grace_s, drain_s)
        await asyncio.gather(stopped, terminated, return_exceptions=True)
    finally:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    # The server has terminated: let its background work finish cleaning up (e.g. closing a Redis client) before
    # the caller's loop ends and would cancel that half done.
    await asyncio.gather(*_supervisors.get(server, ()), return_exceptions=True)
