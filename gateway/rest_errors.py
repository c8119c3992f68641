"""Every REST error in the one shape of gateway.json_response, with the status its class knows.

    install_error_handlers(app)

:mod:`serving.errors` classes keep their status, message and details (field violations, retry delay; an internal
error names only the request id); pydantic's type and shape errors, malformed JSON included, are 400
INVALID_ARGUMENT (not FastAPI's 422) with a field violation per wrong field; Starlette's own (unknown path, wrong
method) keep their status and headers (``Allow`` on 405). An error that knows when to retry answers
``Retry-After`` (429, 503).
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
from serving.errors import FieldViolation, InvalidArgument, RecmeshError, json_details, retry_after_header
from serving.logs import get_request_id

log = logging.getLogger(__name__)

_CODE_OF_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}
# Fields the use cases name as the gRPC API does, and REST's schemas otherwise (gateway/schemas.py).
_REST_FIELD_NAMES = {"session_item_ids": "session"}


def rest_field(field: str) -> str:
    """A field path as REST names it: ``session_item_ids[3]`` -> ``session[3]``."""
    for grpc_name, rest_name in _REST_FIELD_NAMES.items():
        if field.startswith(grpc_name) and field[len(grpc_name) : len(grpc_name) + 1] in ("", "[", "."):
            return rest_name + field[len(grpc_name) :]
    return field


def field_path(loc: Sequence[Any]) -> str:
    """pydantic's location as the API names the field: ``("options", "budget_ms")`` -> ``options.budget_ms``,
    ``("session", 3)`` -> ``session[3]``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def validation_error(errors: Sequence[Any], skip: int = 1) -> InvalidArgument:
    """pydantic's errors as one InvalidArgument: the message ``field.path: what is wrong; ...`` and a field
    violation per error. ``skip``: leading path parts to drop (FastAPI's errors start with "body" or "query"; a
    model's own do not)."""
    parts, violations = [], []
    for err in errors:
        if err.get("type") == "json_invalid":
            return InvalidArgument(f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse the body')}")
        loc = err.get("loc", ())[skip:]
        what = str(err.get("msg"))
        parts.append(f"{'.'.join(str(p) for p in loc)}: {what}" if loc else what)
        if loc:
            violations.append(FieldViolation(field_path(loc), what))
    return InvalidArgument("; ".join(parts) or "invalid request", violations=violations)


def recmesh_error_response(exc: RecmeshError) -> Response:
    """An error of ours with its status and details; an internal one names only the request id (its traceback
    is logged)."""
    if exc.http_status >= 500 and exc.grpc_code.name == "INTERNAL":
        log.error("internal error", exc_info=exc)
        return error_response(500, "INTERNAL", f"internal error (request_id={get_request_id()})")
    retry_after = retry_after_header(exc)
    headers = {"retry-after": retry_after} if retry_after else None
    details = json_details(exc)
    for detail in details:
        for violation in detail.get("fieldViolations", ()):
            violation["field"] = rest_field(violation["field"])
    return error_response(exc.http_status, exc.grpc_code.name, exc.message, details, headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RecmeshError)
    async def recmesh_error(request: Request, exc: RecmeshError) -> Response:
        return recmesh_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return recmesh_error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _CODE_OF_STATUS.get(exc.status_code, "UNKNOWN")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)  # Allow on 405
