"""How the REST face answers: JSON rendered by orjson, and the one shape of every error.

JsonResponse({"items": [...]})                              # numpy arrays and scalars included
error_response(400, "INVALID_ARGUMENT", "k must be between 1 and 200, got 500")
# -> {"error": {"code": "INVALID_ARGUMENT", "message": "k must be between 1 and 200, got 500"}}
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JsonResponse(Response):
    """JSON rendered by orjson (numpy arrays and scalars included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status: int, code: str, message: str) -> JsonResponse:
    """``{"error": {"code": code, "message": message}}``; ``code`` is a gRPC status name."""
    return JsonResponse({"error": {"code": code, "message": message}}, status_code=status)
