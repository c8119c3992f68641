"""The one server interceptor: request id, metrics and error status for every RPC of a recmesh server.

Usage::

    server = grpc.aio.server(interceptors=[RpcInterceptor()])  # serving.server.create_server installs it

For every call of a method it:

- binds the caller's ``x-request-id`` (or a fresh id) for log lines and downstream calls (serving.logs);
- times the call into ``rpc_server_call_duration_seconds`` (OpenTelemetry's rpc.server.call.duration), labelled
  ``rpc_system="grpc"``, ``rpc_service`` (the full service name), ``rpc_method`` and ``rpc_grpc_status_code``
  (numeric, 0 = OK) (serving.metrics);
- answers an exception with the status :func:`serving.errors.rpc_status` names: a RecmeshError with its code
  and message, a failed downstream call with its code, anything else INTERNAL naming only the request id (the
  traceback is logged). Field violations and retry delays go along as a ``google.rpc.Status`` in the
  ``grpc-status-details-bin`` trailer (:func:`serving.errors.status_trailer`), after the trailers the handler
  set. A call the handler aborted itself is counted and passed on untouched.

A request message that cannot be decoded (bad bytes from a hostile or broken client) is INVALID_ARGUMENT with
a short message, for unary and streaming requests alike, instead of the library's UNKNOWN/INTERNAL and an ERROR
traceback per call: each handler's ``request_deserializer`` is wrapped so that a decode error becomes an
:class:`Undecodable` value the wrapped handler answers (one WARNING line per :data:`UNDECODABLE_LOG_EVERY_S` at
most, with the count since the last, so bad bytes cannot flood the logs).

Handlers of every kind are wrapped (unary or streaming requests and responses). Each method's handler is
wrapped once, when it is first called, and reused. The gRPC library's own services (health, reflection) are
left alone: probes would only add noise to the metrics.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
import grpc.aio

from serving.errors import InvalidArgument, as_recmesh_error, rpc_status, status_trailer
from serving.logs import request_id_from_metadata, set_request_id
from serving.metrics import DEFAULT, Metrics

log = logging.getLogger(__name__)
UNDECODABLE_LOG_EVERY_S = 10.0

LIBRARY_SERVICES = "grpc."  # grpc.health.v1.Health, grpc.reflection.v1alpha.ServerReflection
OK, CANCELLED, UNKNOWN = (
    code.value[0] for code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
)

# The handler field of each kind of method, and the function that builds a handler of that kind (also used by
# gateway/auth_grpc.py, which wraps handlers the same way).
HANDLER_KINDS: tuple[tuple[str, Callable[..., grpc.RpcMethodHandler]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler (see the module docstring)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or DEFAULT
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
        rpc = _ObservedRpc(path, self.metrics, service, method)
        for kind, make_handler in HANDLER_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                observed = _observed(rpc, behavior)
                if observed is behavior:  # not ours to answer: its messages are decoded as the library does
                    return handler
                return make_handler(
                    observed,
                    request_deserializer=_tolerant(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
        return handler


class Undecodable:
    """What a request message that could not be decoded becomes (see :func:`_tolerant`)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning :class:`Undecodable` instead of raising (the library would log a traceback and
    answer UNKNOWN or INTERNAL)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:  # protobuf's DecodeError, or whatever a custom deserializer raises
            return Undecodable(type(e).__name__)

    return deserialize


class _UndecodableLog:
    """One WARNING line per ``every_s`` at most, saying how many undecodable messages came since the last."""

    def __init__(self, every_s: float = UNDECODABLE_LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._last = -float("inf")
        self._unlogged = 0

    def note(self, path: str) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            log.warning("undecodable request message(s) in %s: %d since the last such line", path, self._unlogged)
            self._last, self._unlogged = now, 0


_UNDECODABLE_LOG = _UndecodableLog()


def _undecodable(rpc_path: str, request: Undecodable) -> InvalidArgument:
    _UNDECODABLE_LOG.note(rpc_path)
    return InvalidArgument(f"the request message cannot be decoded ({request.reason})")


async def _decoded(rpc_path: str, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that raises InvalidArgument at its first undecodable message."""
    async for request in requests:
        if isinstance(request, Undecodable):
            raise _undecodable(rpc_path, request)
        yield request


class _ObservedRpc:
    """One method's name and metric children, resolved once (per status code, the first time it ends so)."""

    def __init__(self, path: str, metrics: Metrics, service: str, method: str) -> None:
        self.path = path
        self._duration = metrics.rpc_duration
        self._labels = ("grpc", service, method)
        self._by_code: dict[int, Any] = {}  # numeric status code -> its histogram child
        self._child(OK)

    def _child(self, code: int) -> Any:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._duration.labels(*self._labels, str(code))
        return child

    def begin(self, context: grpc.aio.ServicerContext) -> float:
        # No reset needed at the end: grpc.aio runs each call in a context of its own, started empty.
        set_request_id(request_id_from_metadata(context.invocation_metadata()))
        return time.perf_counter()

    def end(self, started: float, code: int) -> None:
        self._child(code).observe(time.perf_counter() - started)

    async def fail(self, context: grpc.aio.ServicerContext, started: float, exc: Exception) -> NoReturn:
        """Count the call with the status ``exc`` ends it with, then answer that status (raises AbortError, as
        ``context.abort`` does). Counted first: abort sends the status before it returns control."""
        if isinstance(exc, grpc.aio.AbortError):  # the handler aborted the call itself: answered and logged already
            code = context.code()
            self.end(started, code.value[0] if isinstance(code, grpc.StatusCode) else UNKNOWN)
            raise exc
        status, details = rpc_status(exc, self.path)
        self.end(started, status.value[0])
        trailer = status_trailer(as_recmesh_error(exc), status, details)
        if trailer:  # abort's trailers replace those the handler set (e.g. the gateway's x-request-id): keep them
            await context.abort(status, details, (*(context.trailing_metadata() or ()), *trailer))
        await context.abort(status, details)
        raise AssertionError("context.abort returned")  # it raises AbortError; for the type checker


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
            response = await behavior(_checked(rpc.path, request), context)
        except asyncio.CancelledError:
            rpc.end(started, CANCELLED)
            raise
        except Exception as exc:
            await rpc.fail(context, started, exc)
        rpc.end(started, OK)  # before the response is sent, as for errors: a caller that got it sees it counted
        return response

    return call


def _observed_stream(rpc: _ObservedRpc, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = rpc.begin(context)
        try:
            async for response in behavior(_checked(rpc.path, request), context):
                yield response
        except asyncio.CancelledError:
            rpc.end(started, CANCELLED)
            raise
        except Exception as exc:
            await rpc.fail(context, started, exc)
        rpc.end(started, OK)

    return stream


def _checked(rpc_path: str, request: Any) -> Any:
    """A unary request as is (InvalidArgument when it was undecodable); a request stream checked as it is read."""
    if isinstance(request, Undecodable):
        raise _undecodable(rpc_path, request)
    if hasattr(request, "__aiter__"):
        return _decoded(rpc_path, request)
    return request
