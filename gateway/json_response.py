"""How the REST face answers: JSON rendered by orjson, and the one shape of every error.

JsonResponse({"items": [...]})                              # numpy arrays and scalars included
error_response(400, "INVALID_ARGUMENT", "k must be between 1 and 200, got 500", details=[...])
# -> {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "k must be between 1 and 200, got 500",
#               "details": [...], "request_id": "9f2c..."}}

The error shape is Google's (https://cloud.google.com/apis/design/errors): ``code`` the HTTP status, ``status``
the gRPC status name, ``details`` google.rpc detail messages in their JSON form (docs/errors.md), plus the request
id the answer's ``x-request-id`` header also carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import JSONResponse

from serving.logs import get_request_id


class JsonResponse(JSONResponse):
    """JSON rendered by orjson (numpy arrays and scalars included). A JSONResponse, so that FastAPI documents a
    route's response_model under it (for any other response class it writes ``{"type": "string"}``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """The error answer: HTTP ``status``, ``code`` a gRPC status name (see the module docstring)."""
    body = {"code": status, "status": code, "message": message, "details": list(details)}
    body["request_id"] = get_request_id() or ""
    return JsonResponse({"error": body}, status_code=status, headers=headers)
