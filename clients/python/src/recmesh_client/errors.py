"""The one exception the convenience client raises: a failed call, with its status and request id.

try:
    client.recommend(["item-1"], k=5000)
except RecmeshError as e:
    print(e.code.name, e.details, e.request_id)   # INVALID_ARGUMENT  k must be ...  3f2a...
"""

from __future__ import annotations

import grpc


class RecmeshError(Exception):
    """A call that ended with a status other than OK. ``code`` is the gRPC status (INVALID_ARGUMENT and NOT_FOUND
    are the caller's mistakes; UNAVAILABLE and DEADLINE_EXCEEDED may succeed on a retry), ``details`` the server's
    message and ``request_id`` the x-request-id the call carried (search the server's logs for it)."""

    def __init__(self, code: grpc.StatusCode, details: str, request_id: str) -> None:
        super().__init__(f"{code.name}: {details} (x-request-id {request_id})")
        self.code = code
        self.details = details
        self.request_id = request_id

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, request_id: str) -> RecmeshError:
        # A failed call is both an RpcError and a grpc.Call, which carries the status.
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
        return cls(code, details, request_id)
