"""An in-process OTLP trace collector for tests: a real gRPC server answering
``opentelemetry.proto.collector.trace.v1.TraceService/Export`` and keeping every span it is sent.

    with Collector() as collector:                     # listens on 127.0.0.1:<free port>
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        ...                                            # processes export their spans to it
        spans = collector.wait_for(lambda spans: any(s.name == "POST /v1/recommend" for s in spans))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from devtools.stack import free_port

KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class Span:
    """One exported span, flattened: ids as W3C hex, the service that sent it, its attributes as plain values."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, object] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()  # (trace_id, span_id) of each link


def _value(any_value) -> object:  # type: ignore[no-untyped-def]
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps what it is sent; `wait_for` blocks until the spans satisfy a predicate."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[Span] = []
        self._changed = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802 (the RPC's name)
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    received.append(
                        Span(
                            service,
                            s.name,
                            KIND_NAMES.get(s.kind, str(s.kind)),
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in s.attributes},
                            tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links),
                        )
                    )
        with self._changed:
            self.spans.extend(received)
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, predicate: Callable[[list[Span]], bool], timeout: float = 15) -> list[Span]:
        """The spans received so far, once ``predicate(spans)`` holds; AssertionError after ``timeout`` s."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.spans), timeout):
                raise AssertionError(f"spans not as expected after {timeout:.0f}s: {self.spans}")
            return list(self.spans)

    def __enter__(self) -> Collector:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)
