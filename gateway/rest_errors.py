"""Every REST error as ``{"error": {"code": ..., "message": ...}}`` with the status its class knows.

    install_error_handlers(app)

:mod:`serving.errors` classes keep their status and message (an internal error names only the request id);
pydantic's type and shape errors, malformed JSON included, are 400 INVALID_ARGUMENT (not FastAPI's 422);
Starlette's own (unknown path, wrong method) keep their status.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.json_response import error_response
from serving.errors import RecmeshError
from serving.logs import get_request_id

log = logging.getLogger(__name__)

_CODE_OF_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}


def validation_message(errors: Sequence[Any], skip: int = 1) -> str:
    """pydantic's errors as one line: ``field.path: what is wrong; ...``. ``skip``: leading path parts to drop
    (FastAPI's errors start with "body"; a model's own do not)."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            return f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse the body')}"
        loc = ".".join(str(p) for p in err.get("loc", ())[skip:])
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def recmesh_error_response(exc: RecmeshError) -> Response:
    """An error of ours with its status; an internal one names only the request id (its traceback is logged)."""
    if exc.http_status >= 500 and exc.grpc_code.name == "INTERNAL":
        log.error("internal error", exc_info=exc)
        return error_response(500, "INTERNAL", f"internal error (request_id={get_request_id()})")
    return error_response(exc.http_status, exc.grpc_code.name, exc.message)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RecmeshError)
    async def recmesh_error(request: Request, exc: RecmeshError) -> Response:
        return recmesh_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "INVALID_ARGUMENT", validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, _CODE_OF_STATUS.get(exc.status_code, "UNKNOWN"), str(exc.detail))
