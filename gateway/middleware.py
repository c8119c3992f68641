"""The REST face's ASGI middleware: what every HTTP request goes through before and after its route.

    app.add_middleware(GatewayMiddleware)          # FastAPI / Starlette

It sets the request id (the caller's ``x-request-id``, or a new one) for the request's task and answers with it,
refuses bodies over limits.MAX_BODY_BYTES (413, chunked ones counted while read), times
every request into ``http_server_request_duration_seconds`` (OpenTelemetry's http.server.request.duration: method,
route template, status code; probes are not counted), and turns an unhandled exception into a 500 naming only
the request id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.json_response import error_response
from serving import limits
from serving.logs import request_id_from_metadata, request_id_var, set_request_id
from serving.metrics import HTTP_DURATION

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})  # routes left out of the metrics: they would only add noise
# OTel's http.request.method: a known method as is, anything else "_OTHER" (a caller cannot grow the label set).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_durations: dict[tuple[str, str, int], Any] = {}  # (method, route, status) -> its histogram child, resolved once


def _duration(method: str, route: str, status: int) -> Any:
    key = (method if method in METHODS else "_OTHER", route, status)
    child = _durations.get(key)
    if child is None:
        child = _durations[key] = HTTP_DURATION.labels(key[0], route, str(status))
    return child


class GatewayMiddleware:
    """Request id in and out, the body cap, latency/error metrics, and a last-resort 500 that names the
    request id but nothing internal. Plain ASGI (no BaseHTTPMiddleware task hop on the hot path)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = limits.MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = scope["headers"]
        # Only the one header is decoded (ASGI header names are lower-case bytes).
        rid = request_id_from_metadata((("x-request-id", v) for k, v in headers if k == b"x-request-id"))
        token = set_request_id(rid)
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            length = next((v for k, v in headers if k == b"content-length"), None)
            if length is not None and int(length) > self.max_body_bytes:
                await self._too_large(send_with_id)
                return
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                replay = await self._buffered(receive)  # chunked: count the bytes ourselves
                if replay is None:
                    await self._too_large(send_with_id)
                    return
                receive = replay
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(500, "INTERNAL", f"internal error (request_id={rid})")(
                    scope, receive, send_with_id
                )
        finally:
            route = getattr(scope.get("route"), "path", "")  # the template; "" when no route matched (404)
            if route not in PROBES:
                _duration(scope["method"], route, status).observe(time.perf_counter() - start)
            request_id_var.reset(token)

    async def _buffered(self, receive: Receive) -> Receive | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, send: Send) -> None:
        response = error_response(413, "RESOURCE_EXHAUSTED", f"request body is larger than {self.max_body_bytes} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
