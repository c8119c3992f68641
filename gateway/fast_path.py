"""POST /v1/recommend without the web framework's layers: the hot route, answered in one plain ASGI step.

    app.add_middleware(RecommendFastPath, answer=recommend_answer)   # gateway/app.py, inside GatewayMiddleware

FastAPI's routing, exception and dependency layers cost more CPU than the route itself does (py-spy under load:
about a fifth of the gateway's samples). This middleware catches POST /v1/recommend before them: the body is
read once, parsed by orjson and validated by the same pydantic model FastAPI uses (so its messages are the same),
then answered by the same function the FastAPI route calls. Errors have the same status and body as through
FastAPI (gateway/rest_errors.py). Every other request, and the OpenAPI document (which still describes this
route from the same schemas), goes to FastAPI. REST_FAST_PATH=false turns it off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.rest_errors import recmesh_error_response, validation_error
from gateway.schemas import RecommendIn
from serving.errors import InvalidArgument, RecmeshError

PATH = "/v1/recommend"


@dataclass(frozen=True)
class _Route:
    path: str


ROUTE = _Route(PATH)  # what Starlette's router would have put in the scope: GatewayMiddleware labels metrics by it


class RecommendFastPath:
    def __init__(self, app: ASGIApp, answer: Callable[[Any, RecommendIn], Awaitable[Response]]) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE
        response = await self._respond(scope["app"].state.core, await _body(receive))
        await response(scope, receive, send)

    async def _respond(self, core: Any, body: bytes) -> Response:
        if core is None:
            return recmesh_error_response(RecmeshError("gateway is not started"))
        if not body.strip():
            return recmesh_error_response(InvalidArgument("the request body is empty: expected a JSON object"))
        try:
            request = RecommendIn.model_validate(orjson.loads(body))
        except orjson.JSONDecodeError as e:
            return recmesh_error_response(InvalidArgument(f"malformed JSON: {e}"))
        except ValidationError as e:  # the same model and mode as FastAPI's: the same messages
            return recmesh_error_response(validation_error(e.errors(), skip=0))
        try:
            return await self.answer(core, request)
        except RecmeshError as e:
            return recmesh_error_response(e)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
