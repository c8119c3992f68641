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
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

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


def start_metrics_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve /metrics over HTTP on ``port`` in a daemon thread; does nothing (returns None) if port <= 0."""
    if port <= 0:
        return None
    return start_http_server(port, addr=addr, registry=registry)
