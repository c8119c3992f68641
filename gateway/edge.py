"""The REST face's edge: what a hostile or overloaded world meets before any route runs.

    app.add_middleware(EdgeMiddleware, limits=EdgeLimits.of(settings))     # gateway/app.py, inside GatewayMiddleware
    uvicorn.Config(app, http=edge_protocol(settings.header_timeout_s, settings.body_timeout_s), ...)  # __main__

Two layers, because uvicorn has no header or body read timeout of its own:

- :func:`edge_protocol`, uvicorn's httptools protocol with two timers per connection. A connection whose request
  headers are not complete ``header_timeout_s`` after it opened (or after its previous answer's next request
  began) is answered 408 and closed, an idle one that never sends a byte too; one whose body has not fully
  arrived ``body_timeout_s`` + 1 s after its headers is closed (a backstop: the middleware answers first). It
  stamps each request's scope with the time its headers were parsed (:data:`ARRIVED`).
- :class:`EdgeMiddleware` (ASGI), for every request but the probes, in this order:

  * only JSON bodies: a POST/PUT/PATCH whose Content-Type is not ``application/json`` or ``application/*+json``
    is 415 (a text/plain or form POST from any web page is a CSRF vector);
  * load shedding: while the event loop runs more than ``shed_loop_lag_ms`` late (the CPU is saturated), or
    when the request already waited more than ``shed_queue_ms`` (its budget) before reaching here, it is
    answered 503 + Retry-After at once: working on it would only make the next ones late too;
  * the body read with a deadline: not complete within ``body_timeout_s`` -> 408 and the connection closed. A
    request still uploading is not "in flight": slow clients cannot crowd out the ones being served;
  * a concurrency cap: ``max_in_flight`` requests already being handled -> 503 + Retry-After at once;
  * the queue time counted in the budget: :data:`gateway.budget.arrived_at` is set for the request's task.

  Each 503 is counted in ``recmesh_shed_requests_total{reason}`` (loop_lag, queue, concurrency). What "queue
  time" measures: uvicorn does not expose when a connection was accepted or when its bytes reached the socket,
  so it is the time from the parse of the request's headers to the handler's start, plus the loop lag
  :class:`LoopLag` measured last (how late a 20 ms timer fired: about how long those bytes waited to be parsed).
  The client's own upload time of the body is not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.budget import arrived_at
from gateway.json_response import error_response
from gateway.rest_errors import recmesh_error_response
from serving.errors import Unavailable
from serving.metrics import SHED_REQUESTS

ARRIVED = "recmesh.arrived"  # scope key: perf_counter() when the request's headers were parsed
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})  # never refused: they say whether this process is alive
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
RETRY_AFTER_S = 1


# ------------------------------------------------------------------------------------------ the connection
def _timeout_response(message: bytes) -> bytes:
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
    )


HEADERS_TOO_SLOW = _timeout_response(b"request headers not received in time")


def edge_protocol(header_timeout_s: float, body_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header and a body read timeout (``uvicorn.Config(http=...)``)."""

    class EdgeHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()  # a connection that never sends a byte is closed too

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_timers()
            self._body_timer = self.loop.call_later(body_timeout_s + 1.0, self._body_too_slow)
            self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]  # the request can start
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._cancel_timers()
            super().on_message_complete()

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _cancel_timers(self) -> None:
            for timer in (self._header_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._body_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(HEADERS_TOO_SLOW)
                self.transport.close()

        def _body_too_slow(self) -> None:  # the middleware answered 408 already, unless the app never read
            self._body_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return EdgeHttpToolsProtocol


# ------------------------------------------------------------------------------------------ the event loop
class LoopLag:
    """How late the event loop runs a timer, sampled every ``every_s``: about how long a new request's bytes wait
    before they are parsed. ``lag_s`` is the least of the last ``window`` samples: a lag that lasts (a saturated
    CPU), not one pause (a collection, a model load) that is over by the time anyone could react to it.

    One sampler per event loop: ``LoopLag.running()`` starts it on the current loop the first time."""

    _by_loop: dict[asyncio.AbstractEventLoop, LoopLag] = {}

    def __init__(self, every_s: float = 0.02, window: int = 3) -> None:
        self.every_s = every_s
        self._samples: deque[float] = deque([0.0], maxlen=window)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def running(cls) -> LoopLag:
        loop = asyncio.get_running_loop()
        lag = cls._by_loop.get(loop)
        if lag is None:
            for old in [other for other in cls._by_loop if other.is_closed()]:
                del cls._by_loop[old]
            lag = cls._by_loop[loop] = cls()
            lag._task = loop.create_task(lag._sample())
        return lag

    @property
    def lag_s(self) -> float:
        return min(self._samples)

    async def _sample(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.every_s)
            self._samples.append(max(0.0, time.perf_counter() - before - self.every_s))


# ------------------------------------------------------------------------------------------ the requests
@dataclass(frozen=True)
class EdgeLimits:
    """The edge's numbers (gateway/settings.py names their variables)."""

    max_in_flight: int = 256
    shed_queue_ms: float = 200.0
    shed_loop_lag_ms: float = 100.0
    body_timeout_s: float = 5.0

    @classmethod
    def of(cls, settings: Any) -> EdgeLimits:
        return cls(
            max_in_flight=settings.max_in_flight,
            shed_queue_ms=settings.shed_queue_ms or settings.budget_ms,
            shed_loop_lag_ms=settings.shed_loop_lag_ms,
            body_timeout_s=settings.body_timeout_s,
        )


class _BodyTimeout(Exception):
    pass


def json_content_type(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The request's media type when it is JSON (``application/json``, ``application/*+json``), else None."""
    value = next((v for k, v in headers if k == b"content-type"), b"")
    media = value.split(b";", 1)[0].strip().lower()
    if media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json")):
        return media
    return None


class EdgeMiddleware:
    """Content type, concurrency cap, load shedding, body deadline and queue time (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: EdgeLimits | None = None, lag: LoopLag | None = None) -> None:
        self.app = app
        self.limits = limits or EdgeLimits()
        self.lag = lag  # None: the running loop's own sampler
        self.in_flight = 0
        self._shed_counts = {reason: SHED_REQUESTS.labels(reason) for reason in ("concurrency", "queue", "loop_lag")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if scope["method"] in BODY_METHODS and json_content_type(scope["headers"]) is None:
            await _answer(send, _unsupported(scope["headers"]))
            return
        entered = time.perf_counter()
        lag_s = (self.lag or LoopLag.running()).lag_s
        # Waited since its headers were parsed, plus about one loop lag before they could be parsed at all.
        queued_s = entered - scope.get(ARRIVED, entered) + lag_s
        refusal = self._overload(queued_s * 1000.0, lag_s * 1000.0)
        if refusal is None and scope["method"] in BODY_METHODS:
            try:  # not counted in flight meanwhile: slow uploads must not crowd out the requests being served
                receive = await self._read_body(receive, entered + self.limits.body_timeout_s)
            except _BodyTimeout:
                await _answer(send, _body_too_slow(self.limits.body_timeout_s))
                return
        if refusal is None and self.in_flight >= self.limits.max_in_flight:
            refusal = self._shed("concurrency", f"over {self.limits.max_in_flight} requests in flight")
        if refusal is not None:
            await _answer(send, refusal)
            return
        self.in_flight += 1
        # The budget started when the request was ready but waited; the client's own upload time is not counted.
        token = arrived_at.set(time.perf_counter() - queued_s)
        try:
            await self.app(scope, receive, send)
        finally:
            arrived_at.reset(token)
            self.in_flight -= 1

    def _overload(self, queued_ms: float, lag_ms: float) -> Response | None:
        """The 503 when the loop is saturated or the request already waited past its usefulness; None to go on."""
        if lag_ms > self.limits.shed_loop_lag_ms:
            return self._shed("loop_lag", f"the gateway is overloaded (event loop {lag_ms:.0f} ms late)")
        if queued_ms > self.limits.shed_queue_ms:
            return self._shed("queue", f"the request waited {queued_ms:.0f} ms before it could be handled")
        return None

    def _shed(self, reason: str, message: str) -> Response:
        self._shed_counts[reason].inc()
        return recmesh_error_response(Unavailable(f"{message}; retry later", retry_after_s=RETRY_AFTER_S))

    @staticmethod
    async def _read_body(receive: Receive, deadline: float) -> Receive:
        """The whole body read before ``deadline`` (perf_counter), replayed to the app as one message."""
        chunks: list[bytes] = []
        while True:
            left = deadline - time.perf_counter()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimeout from None
            if message["type"] != "http.request":  # the client went away: pass that on
                return _replay(None, receive, message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return _replay(b"".join(chunks), receive)


def _replay(body: bytes | None, receive: Receive, first: Message | None = None) -> Receive:
    pending: list[Message] = [first] if first is not None else [{"type": "http.request", "body": body}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _answer(send: Send, response: Response) -> None:
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _unsupported(headers: list[tuple[bytes, bytes]]) -> Response:
    sent = next((v for k, v in headers if k == b"content-type"), b"").decode("latin-1")[:100] or "none"
    return error_response(
        415,
        "INVALID_ARGUMENT",
        f"the request body must be JSON: Content-Type application/json (or application/*+json), got {sent}",
    )


def _body_too_slow(timeout_s: float) -> Response:
    return error_response(
        408,
        "DEADLINE_EXCEEDED",
        f"the request body did not arrive within {timeout_s:g} s",
        headers={"connection": "close"},
    )
