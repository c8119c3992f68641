"""OpenTelemetry tracing, off unless the standard ``OTEL_*`` variables ask for it.

On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``), or, with it unset,
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; always off when
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Off, nothing is imported or installed: no
interceptor, no middleware, no Redis hook, no log field (a process pays one boolean check per stage call).

On, :func:`configure_tracing` installs a TracerProvider (resource ``service.name`` = the process' name unless
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` name it; sampler from ``OTEL_TRACES_SAMPLER``; a
BatchSpanProcessor, ``OTEL_BSP_*``, feeding the OTLP/gRPC exporter, ``OTEL_EXPORTER_OTLP_*``), the Redis
instrumentation, and ``trace_id``/``span_id`` in every JSON log line; the servers, channels and the gateway's app
then ask this module for their interceptors and middleware. W3C ``traceparent`` travels in gRPC metadata and HTTP
headers. Probes (gRPC health and reflection, /healthz, /readyz, /metrics) and Redis commands outside any request
(the version pointer's polling) make no spans. docs/tracing.md has the whole story.

Usage::

    configure_tracing("ranking")                 # once, at process start (before servers and channels)
    grpc.aio.server(interceptors=[*server_interceptors(), RpcInterceptor()])
    grpc.aio.insecure_channel(target, interceptors=client_interceptors())
    app = asgi_middleware(app)                   # the gateway's REST app, outermost
    shutdown_tracing()                           # at process stop: flushes the spans still queued
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from serving import logs

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

PROBE_URLS = r"/(healthz|readyz|metrics)$"  # regexes (comma-separated) searched in the request's URL
LIBRARY_SERVICES = "grpc."  # grpc.health.v1.Health, grpc.reflection.*: probes and tooling
EXPORTERS = ("otlp", "console")

_provider: TracerProvider | None = None


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (the rule in the module docstring)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    """Whether :func:`configure_tracing` switched tracing on in this process."""
    return _provider is not None


def configure_tracing(service_name: str) -> bool:
    """Switch tracing on for this process if the environment asks for it (see the module docstring); returns
    whether it is on. Idempotent. An unknown exporter name is logged and leaves tracing off."""
    global _provider
    if _provider is not None:
        return True
    if not requested():
        return False
    exporters = [e.strip() for e in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if e.strip()]
    unknown = [e for e in exporters if e not in EXPORTERS]
    if unknown:
        log.error("tracing stays off: OTEL_TRACES_EXPORTER=%s (supported: %s)", ",".join(unknown), ", ".join(EXPORTERS))
        return False

    from opentelemetry import trace
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource, sampler=_sampler(), shutdown_on_exit=False)
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # unless something set one already
        trace.set_tracer_provider(provider)  # for code that asks for the global one; ours is passed explicitly
    RedisInstrumentor().instrument(tracer_provider=provider)
    logs.set_trace_ids(_current_ids)
    _provider = provider
    log.info("tracing on", extra={"exporters": exporters, "resource": dict(provider.resource.attributes)})
    return True


def shutdown_tracing() -> None:
    """Export the spans still queued and stop the exporters (no-op when tracing is off)."""
    global _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    provider, _provider = _provider, None
    logs.set_trace_ids(None)
    RedisInstrumentor().uninstrument()
    provider.shutdown()


def server_interceptors() -> list[Any]:
    """The gRPC aio server interceptor that starts a server span per call (the caller's traceparent its parent), to
    go first (outermost) in a server's list; none when tracing is off. gRPC's own services make no spans."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return [aio_server_interceptor(_provider, filter_=filters.negate(filters.service_prefix(LIBRARY_SERVICES)))]


def client_interceptors() -> list[Any] | None:
    """The gRPC aio client interceptors that start a client span per call and send its traceparent; None (what
    ``grpc.aio.insecure_channel`` takes for "no interceptors") when tracing is off. Health checks make no spans."""
    if _provider is None:
        return None
    from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

    return list(aio_client_interceptors(_provider, filter_=filters.negate(filters.service_prefix(LIBRARY_SERVICES))))


def asgi_middleware(app: Any, routes: Sequence[Any] = ()) -> Any:
    """``app`` wrapped in OpenTelemetry's ASGI middleware (a server span per HTTP request, the caller's
    traceparent its parent; probes excluded); ``app`` itself when tracing is off.

    ``routes`` (Starlette routes: ``.path`` and ``.path_regex``) name the spans by route, ``GET
    /v1/items/{item_id}/similar``, not by path; a path no route matches is named by its method alone, so neither
    ids nor a scanner's guesses make span names without end.
    """
    if _provider is None:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
        method, path = scope.get("method", "HTTP"), scope.get("path", "")
        for route in routes:
            if route.path_regex.match(path):
                return f"{method} {route.path}", {"http.route": route.path}
        return method, {}

    return OpenTelemetryMiddleware(
        app,
        excluded_urls=PROBE_URLS,
        default_span_details=span_details if routes else None,
        tracer_provider=_provider,
        exclude_spans=["receive", "send"],
    )


def current_context() -> Context | None:
    """The caller's trace context, to carry into work done on its behalf in another task; None when off."""
    if _provider is None:
        return None
    from opentelemetry.context import get_current

    return get_current()


@contextlib.contextmanager
def batch_span(stage: str, contexts: Sequence[Context | None]) -> Iterator[None]:
    """Run one RPC made for several callers (a batch) in the first caller's trace.

    Its spans go in the trace of ``contexts[0]`` (the member the batch is sent for). With more than one member, an
    INTERNAL span ``<stage> batch`` wraps the RPC, linked to every other member's span, and each of those gets a
    link back: every trace shows which batch served it, though only one holds the RPC's spans. A batch of one runs
    as its caller's own call, in its trace, with no extra span.
    """
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    first = contexts[0] if contexts else None
    token = otel_context.attach(first) if first is not None else None
    try:
        if len(contexts) <= 1 or _provider is None:
            yield
            return
        others = [trace.get_current_span(c) for c in contexts[1:] if c is not None]
        links = [trace.Link(s.get_span_context()) for s in others if s.get_span_context().is_valid]
        tracer = trace.get_tracer(__name__, tracer_provider=_provider)
        attributes: dict[str, int | str] = {"recmesh.batch.members": len(contexts), "recmesh.stage": stage}
        with tracer.start_as_current_span(f"{stage} batch", links=links, attributes=attributes) as span:
            for other in others:
                if other.is_recording():  # still open: the member waits for this batch
                    other.add_link(span.get_span_context(), {"recmesh.batch.members": len(contexts)})
            yield
    finally:
        if token is not None:
            otel_context.detach(token)


def _current_ids() -> tuple[str, str] | None:
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _sampler() -> Any:
    """The sampler ``OTEL_TRACES_SAMPLER`` names, never starting a trace at a Redis command: a command outside any
    request (the version pointer's polling, every second) would be a trace of its own, all noise."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import sampling

    configured = sampling._get_from_env_or_default()  # the SDK's own reading of OTEL_TRACES_SAMPLER(_ARG)

    class NoOrphanClientSpans(sampling.Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: trace.SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> sampling.SamplingResult:
            parent = trace.get_current_span(parent_context).get_span_context()
            if kind == trace.SpanKind.CLIENT and not parent.is_valid:
                return sampling.SamplingResult(sampling.Decision.DROP)
            return configured.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"NoOrphanClientSpans({configured.get_description()})"

    return NoOrphanClientSpans()
