"""gRPC server and channel plumbing shared by the services and the gateway.

Usage::

    server, port, health = await create_server("[::]:50051", register, [SERVICE_NAME])
    await serve_until_signal(server, health)          # SIGTERM/SIGINT -> NOT_SERVING -> drain -> stop

    channel = make_channel("10.0.0.5:50051,10.0.0.6:50051")   # round_robin over both replicas
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2
from grpc_health.v1 import health_pb2_grpc as health_grpc
from grpc_reflection.v1alpha import reflection

logger = logging.getLogger(__name__)

MB = 1024 * 1024

# Retries for UNAVAILABLE only (the request never reached a handler, or the replica went away): every
# recmesh RPC is idempotent or safe to repeat, and a short backoff fits inside a 200 ms budget.
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{}],  # every method of every service
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.005s",
                "maxBackoff": "0.05s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

CONNECTION_AGE_GRACE_MS = 5000  # calls still running when a connection reaches its maximum age

# Target schemes gRPC resolves itself; such targets are passed through untouched.
_URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


def _message_options(max_message_mb: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_mb * MB),
        ("grpc.max_send_message_length", max_message_mb * MB),
    ]


def channel_options(max_message_mb: int = 4) -> list[tuple[str, Any]]:
    """Client channel options: message size limits, retries on UNAVAILABLE, round_robin balancing."""
    return [
        *_message_options(max_message_mb),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ]


def _split_host_port(address: str) -> tuple[str, str]:
    if address.startswith("["):  # [ipv6]:port
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host, port


def _resolve(host: str, port: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if host == "localhost":
        return [ipaddress.IPv4Address("127.0.0.1")]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    if not infos:
        raise ValueError(f"cannot resolve {host!r}")
    return [ipaddress.IPv4Address(info[4][0]) for info in infos]


def resolve_target(target: str) -> str:
    """The gRPC target for ``target``: a URI (``dns:///name:port``) or one ``host:port`` is returned as
    is; a comma-separated ``h1:p1,h2:p2`` list becomes ``ipv4:a1:p1,a2:p2`` (or ``ipv6:[a1]:p1,...``),
    host names resolved once with getaddrinfo ("localhost" -> 127.0.0.1) and every address kept.
    """
    target = target.strip()
    if not target:
        raise ValueError("empty gRPC target")
    if "://" in target or target.startswith(_URI_SCHEMES) or "," not in target:
        return target
    v4: list[str] = []
    v6: list[str] = []
    for address in (a.strip() for a in target.split(",")):
        if not address:
            continue
        host, port = _split_host_port(address)
        for ip in _resolve(host, port):
            entry = f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"
            bucket = v4 if ip.version == 4 else v6
            if entry not in bucket:
                bucket.append(entry)
    if v4 and v6:
        raise ValueError(f"cannot mix IPv4 and IPv6 addresses in one target: {target!r}")
    return f"ipv4:{','.join(v4)}" if v4 else f"ipv6:{','.join(v6)}"


def make_channel(target: str, max_message_mb: int = 4) -> grpc.aio.Channel:
    """An insecure asyncio channel to ``target`` (see :func:`resolve_target`), round_robin across replicas.

    Resolving a comma-separated list of host names blocks (getaddrinfo): call this at startup.
    """
    return grpc.aio.insecure_channel(resolve_target(target), options=channel_options(max_message_mb))


def server_options(max_message_mb: int = 4, max_connection_age_s: float = 30.0) -> list[tuple[str, Any]]:
    """Message size limits and a maximum connection age. gRPC clients re-resolve a name only when a connection
    breaks; ending every connection after ``max_connection_age_s`` (GOAWAY, calls in flight get a grace) makes
    the gateway's round_robin pick up replicas an autoscaler added since (0 = never)."""
    options = _message_options(max_message_mb)
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
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build, bind and start an asyncio gRPC server.

    ``register(server)`` adds the servicers; the library's health servicer (SERVING for "" and every name in
    ``service_names``) and reflection (those names + health + reflection) are added here. ``address`` may use
    port 0; the bound port is returned. See :func:`server_options` for ``max_connection_age_s``.
    """
    server = grpc.aio.server(options=server_options(max_message_mb, max_connection_age_s))
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {address!r}")
    await server.start()
    logger.info("gRPC server listening on %s (port %d)", address, port, extra={"services": list(service_names)})
    return server, port, health_servicer


_supervisors: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones


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

    supervisor = asyncio.create_task(supervise())
    _supervisors.add(supervisor)
    supervisor.add_done_callback(_supervisors.discard)


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
    """Serve until SIGTERM/SIGINT (or ``stop`` is set, or the server terminates), then :func:`shutdown`."""
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
