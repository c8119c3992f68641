"""Prometheus metrics shared by the services and the gateway (the reference: docs/metrics.md).

Traffic metrics follow the OpenTelemetry semantic conventions, in Prometheus form (dots become underscores, the
unit a suffix): ``http_server_request_duration_seconds`` (the REST face, gateway.middleware) and
``rpc_server_call_duration_seconds`` (every gRPC server, serving.interceptor). Our own domain counters keep the
``recmesh_`` prefix. No label is called ``service`` (prometheus-operator sets one of its own on every target):
the process is identified by Prometheus' job and instance; ``component`` says which part of it counted.

The module-level metrics live in prometheus' default registry (what the /metrics endpoint serves). Tests that
want isolated counters build their own with ``Metrics(CollectorRegistry())`` and pass it where a ``metrics``
argument is accepted. Probes (health checks, reflection, /healthz, /readyz, /metrics) are not counted.

Usage::

    start_metrics_server(9103)                                   # /metrics over HTTP
    DEGRADED.labels("gateway", "ranking unavailable").inc()      # component, reason
    HTTP_DURATION.labels("POST", "/v1/recommend", "200").observe(0.012)
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
        histogram = functools.partial(Histogram, buckets=LATENCY_BUCKETS, registry=registry)
        # OTel http.server.request.duration; http_route is the route template ("" when no route matched).
        self.http_duration = histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests (the gateway's REST face).",
            ["http_request_method", "http_route", "http_response_status_code"],
        )
        # OTel rpc.server.call.duration; rpc_grpc_status_code is the numeric status (0 = OK).
        self.rpc_duration = histogram(
            "rpc_server_call_duration_seconds",
            "Duration of gRPC server calls.",
            ["rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code"],
        )
        self.degraded = counter(
            "recmesh_degradations",
            "Degradations: a stage skipped or a fallback served (a gateway answer may count one per hop), by "
            "component and reason.",
            ["component", "reason"],
        )
        self.shed_requests = counter(
            "recmesh_shed_requests",
            "Requests the gateway refused at once, before any work, so that the others keep their budget "
            "(503 + Retry-After / RESOURCE_EXHAUSTED), by reason (concurrency|queue|loop_lag).",
            ["reason"],
        )
        self.embedding_lookups = counter(
            "recmesh_embedding_lookups",
            "Item vectors looked up by the embedding store, by tier (lru|redis|bundle) and result (hit|miss).",
            ["tier", "result"],
        )


DEFAULT = Metrics()
HTTP_DURATION = DEFAULT.http_duration
RPC_DURATION = DEFAULT.rpc_duration
DEGRADED = DEFAULT.degraded
EMBEDDING_LOOKUPS = DEFAULT.embedding_lookups
SHED_REQUESTS = DEFAULT.shed_requests


def start_metrics_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve /metrics over HTTP on ``port`` in a daemon thread; does nothing (returns None) if port <= 0."""
    if port <= 0:
        return None
    return start_http_server(port, addr=addr, registry=registry)
