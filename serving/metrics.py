"""Prometheus metrics shared by the services and the gateway.

The module-level metrics live in prometheus' default registry (what the /metrics endpoint serves). Tests that
want isolated counters build their own with ``Metrics(CollectorRegistry())`` and pass it where a ``metrics``
argument is accepted. Every gRPC method of a ``serving.server`` server is timed and its errors counted by
serving.interceptor.

Usage::

    start_metrics_server(9103)                          # /metrics over HTTP
    DEGRADED.labels("gateway", "ranking_timeout").inc()
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc
import grpc.aio
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from serving.errors import grpc_status_of

F = TypeVar("F", bound=Callable[..., Any])

# 0.1 ms .. 1 s, roughly x2 steps: hop latencies live around 0.1-10 ms, whole requests around 1-65 ms.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.065,
    0.1,
    0.2,
    0.5,
    1.0,
)


class Metrics:
    """The recmesh metric families, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.registry = registry
        counter = functools.partial(Counter, registry=registry)
        self.rpc_latency = Histogram(
            "recmesh_rpc_latency_seconds",
            "Server-side RPC latency.",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rpc_errors = counter(
            "recmesh_rpc_errors", "RPCs that ended with a non-OK status.", ["service", "method", "code"]
        )
        self.degraded = counter("recmesh_degraded", "Answers served degraded, by reason.", ["service", "reason"])
        self.cache = counter(
            "recmesh_cache_lookups",
            "Embedding lookups by tier (lru|redis|bundle) and result (hit|miss).",
            ["service", "result", "tier"],
        )


DEFAULT = Metrics()
RPC_LATENCY = DEFAULT.rpc_latency
RPC_ERRORS = DEFAULT.rpc_errors
DEGRADED = DEFAULT.degraded
CACHE = DEFAULT.cache


def observe_rpc(service: str, method: str | None = None, metrics: Metrics | None = None) -> Callable[[F], F]:
    """Deprecated: :class:`serving.interceptor.RpcInterceptor` (installed by ``serving.server.create_server``)
    does this for every method. Kept until gateway/grpc_api.py stops decorating its methods with it.

    Decorates an async servicer method: time it into RPC_LATENCY and count failures in RPC_ERRORS. Place it
    *inside* ``@grpc_errors`` so it sees the original exception (and its status code).
    """

    def decorate(fn: F) -> F:
        name = method or fn.__name__

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            m = metrics or DEFAULT
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            except grpc.aio.AbortError:
                m.rpc_errors.labels(service, name, _aborted_code(args)).inc()
                raise
            except Exception as exc:
                m.rpc_errors.labels(service, name, grpc_status_of(exc).name).inc()
                raise
            finally:
                m.rpc_latency.labels(service, name).observe(time.perf_counter() - start)

        return cast(F, wrapper)

    return decorate


def _aborted_code(args: tuple[Any, ...]) -> str:
    code = args[-1].code() if args and hasattr(args[-1], "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def start_metrics_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve /metrics over HTTP on ``port`` in a daemon thread; does nothing (returns None) if port <= 0."""
    if port <= 0:
        return None
    return start_http_server(port, addr=addr, registry=registry)
