"""The one server interceptor: request id, metrics and error status for every RPC of a recmesh server.

Usage::

    server = grpc.aio.server(interceptors=[RpcInterceptor()])  # serving.server.create_server installs it

For every call of a method it:

- binds the caller's ``x-request-id`` (or a fresh id) for log lines and downstream calls (serving.logs);
- times the call into ``recmesh_rpc_latency_seconds`` and counts a non-OK end in ``recmesh_rpc_errors``,
  labelled service/method/code (serving.metrics);
- answers an exception with the status :func:`serving.errors.rpc_status` names: a RecmeshError with its code
  and message, a failed downstream call with its code, anything else INTERNAL naming only the request id (the
  traceback is logged). A call the handler aborted itself is counted and passed on untouched.

Handlers of every kind are wrapped (unary or streaming requests and responses). Each method's handler is
wrapped once, when it is first called, and reused. The gRPC library's own services (health, reflection) are
left alone: probes would only add noise to the metrics.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from serving.errors import rpc_status
from serving.logs import request_id_from_metadata, set_request_id
from serving.metrics import DEFAULT, Metrics

LIBRARY_SERVICES = "grpc."  # grpc.health.v1.Health, grpc.reflection.v1alpha.ServerReflection

# The handler field of each kind of method, and the function that builds a handler of that kind.
_KINDS: tuple[tuple[str, Callable[..., grpc.RpcMethodHandler]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def service_label(service: str) -> str:
    """The metrics label of a gRPC service: ``recmesh.v1.CandidateGenerationService`` -> ``candidate_generation``."""
    name = service.rsplit(".", 1)[-1].removesuffix("Service")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler (see the module docstring). ``service_label`` names the service in the metrics
    of every method; None = derived from each method's service name (:func:`service_label`)."""

    def __init__(self, metrics: Metrics | None = None, service_label: str | None = None) -> None:
        self.metrics = metrics or DEFAULT
        self.service_label = service_label
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}  # method path -> the handler to run

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        path: str = handler_call_details.method  # type: ignore[attr-defined]
        handler = self._handlers.get(path)
        if handler is None:
            found = await continuation(handler_call_details)
            if found is None:
                return None  # no such method: not cached, so unknown names cannot grow the cache
            handler = self._handlers.setdefault(path, self._wrap(path, found))
        return handler

    def _wrap(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = path.lstrip("/").rpartition("/")
        if service.startswith(LIBRARY_SERVICES):
            return handler
        rpc = _ObservedRpc(path, self.metrics, self.service_label or service_label(service), method)
        for kind, make_handler in _KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make_handler(
                    _observed(rpc, behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


class _ObservedRpc:
    """One method's name and metric children, resolved once."""

    def __init__(self, path: str, metrics: Metrics, service: str, method: str) -> None:
        self.path = path
        self.labels = (service, method)
        self.latency = metrics.rpc_latency.labels(service, method)
        self.errors = metrics.rpc_errors

    def begin(self, context: grpc.aio.ServicerContext) -> float:
        # No reset needed at the end: grpc.aio runs each call in a context of its own, started empty.
        set_request_id(request_id_from_metadata(context.invocation_metadata()))
        return time.perf_counter()

    def end(self, started: float) -> None:
        self.latency.observe(time.perf_counter() - started)

    async def fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        """Count ``exc`` and answer its status (raises AbortError, as ``context.abort`` does)."""
        if isinstance(exc, grpc.aio.AbortError):  # the handler aborted the call itself: answered and logged already
            self._count(context.code())
            raise exc
        code, details = rpc_status(exc, self.path)
        self._count(code)
        await context.abort(code, details)

    def _count(self, code: grpc.StatusCode | None) -> None:
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        self.errors.labels(*self.labels, name).inc()


def _observed(rpc: _ObservedRpc, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """``behavior`` (a handler taking a request or a request iterator, and the context) wrapped for ``rpc``."""
    if inspect.isasyncgenfunction(behavior):  # a handler that yields its responses
        return _observed_stream(rpc, behavior)
    if inspect.iscoroutinefunction(behavior):  # a handler that returns its response (or writes them)
        return _observed_call(rpc, behavior)
    return behavior  # a synchronous handler runs on grpc's thread pool: none of ours is


def _observed_call(rpc: _ObservedRpc, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = rpc.begin(context)
        try:
            return await behavior(request, context)
        except Exception as exc:
            await rpc.fail(context, exc)
        finally:
            rpc.end(started)

    return call


def _observed_stream(rpc: _ObservedRpc, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = rpc.begin(context)
        try:
            async for response in behavior(request, context):
                yield response
        except Exception as exc:
            await rpc.fail(context, exc)
        finally:
            rpc.end(started)

    return stream
