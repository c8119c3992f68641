"""The gRPC face's authentication: a server interceptor for RecommendationService only.

    create_server(..., interceptors=[AuthInterceptor(auth)])   # gateway/grpc_api.py; after serving's RpcInterceptor

The key comes from the ``authorization`` (``Bearer <key>``) or ``x-api-key`` metadata and is checked against the
scope of the method (:data:`METHOD_SCOPES`) when the call starts, before a request message is read. A refusal is
raised as a serving.errors class, so serving.interceptor answers it (UNAUTHENTICATED, PERMISSION_DENIED,
RESOURCE_EXHAUSTED with RetryInfo), counts it and binds its request id. Health and reflection stay open (probes).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from gateway import auth
from serving.interceptor import HANDLER_KINDS, Continuation

METHOD_SCOPES = {
    "Recommend": "recommend",  # history:read as well when it names a user_id (gateway/grpc_api.py)
    "GetItemEmbeddings": "stages",
    "GetSimilarItems": "stages",
    "FindCandidates": "stages",
    "RankCandidates": "stages",
    "RecordEvent": "events:write",
    "RecordEvents": "events:write",
    "UpsertItems": "catalog:write",
    "DeleteItems": "catalog:write",
    "GetItem": "catalog:read",
}


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call of ``service`` (its full name); other services pass untouched. It sits inside
    serving.interceptor's RpcInterceptor, which keeps the handler built for each method, so this runs once per
    method, not per call."""

    def __init__(self, authenticator: auth.Authenticator, service: str) -> None:
        self.auth = authenticator
        self.prefix = f"/{service}/"

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        path: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or not path.startswith(self.prefix):
            return handler
        return self._wrap(path, handler)

    def _wrap(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        scope = METHOD_SCOPES.get(path[len(self.prefix) :])
        for kind, make_handler in HANDLER_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make_handler(
                    self._checked(behavior, scope),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _caller(self, context: grpc.aio.ServicerContext, scope: str | None) -> auth.Caller:
        authorization = api_key = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
            elif key == "x-api-key":
                api_key = value
        return self.auth.check(auth.credential_of(authorization, api_key), scope)

    def _checked(self, behavior: Callable[..., Any], scope: str | None) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with auth.bound(self._caller(context, scope)):
                    async for response in behavior(request, context):
                        yield response

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with auth.bound(self._caller(context, scope)):
                return await behavior(request, context)

        return call
