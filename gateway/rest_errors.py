"""Every REST error as ``{"error": {"code": ..., "message": ...}}`` with the status its class knows.

    install_error_handlers(app)

:mod:`serving.errors` classes keep their status and message (an internal error names only the request id);
pydantic's type and shape errors, malformed JSON included, are 400 INVALID_ARGUMENT (not FastAPI's 422);
Starlette's own (unknown path, wrong method) keep their status.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.json_response import error_response
from serving.errors import RecmeshError
from serving.logs import get_request_id

log = logging.getLogger(__name__)

_CODE_OF_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}


def validation_message(exc: RequestValidationError) -> str:
    """pydantic's errors as one line: ``field.path: what is wrong; ...``."""
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse the body')}"
        loc = ".".join(str(p) for p in err.get("loc", ())[1:])
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RecmeshError)
    async def recmesh_error(request: Request, exc: RecmeshError) -> Response:
        if exc.http_status >= 500 and exc.grpc_code.name == "INTERNAL":
            log.error("internal error", exc_info=exc)
            return error_response(500, "INTERNAL", f"internal error (request_id={get_request_id()})")
        return error_response(exc.http_status, exc.grpc_code.name, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "INVALID_ARGUMENT", validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, _CODE_OF_STATUS.get(exc.status_code, "UNKNOWN"), str(exc.detail))
