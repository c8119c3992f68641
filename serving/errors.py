"""One error hierarchy for every recmesh process, and the gRPC status a server answers for an exception.

Each error knows its gRPC status code and its HTTP status, so the gRPC servers (serving.interceptor) and the REST
gateway map them in one place each. Cores raise these; they never import grpc themselves for errors.

Usage::

    raise InvalidArgument("k must be >= 0, got -1")   # -> INVALID_ARGUMENT / 400
    raise NotFound("model version v7 is not loaded")  # -> NOT_FOUND / 404
    code, details = rpc_status(exc, "/recmesh.v1.RankingService/Rank")  # what a server answers for `exc`
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import grpc
import grpc.aio

from recmesh.registry import VersionNotAvailable
from serving.logs import get_request_id

logger = logging.getLogger(__name__)


class RecmeshError(Exception):
    """Base class. Used as is, it is an internal error (INTERNAL / 500).

    A subclass names its statuses in its bases, ``class Gone(RecmeshError, grpc_code=..., http_status=410)``; a
    subclass of a subclass keeps its parent's.
    """

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def __init_subclass__(
        cls, grpc_code: grpc.StatusCode | None = None, http_status: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if grpc_code is not None:
            cls.grpc_code = grpc_code
        if http_status is not None:
            cls.http_status = http_status

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or type(self).__name__


class InvalidArgument(RecmeshError, grpc_code=grpc.StatusCode.INVALID_ARGUMENT, http_status=400):
    """The caller's input is malformed or out of range."""


class NotFound(RecmeshError, grpc_code=grpc.StatusCode.NOT_FOUND, http_status=404):
    """Something the caller named does not exist (an item, a model version that is not loaded)."""


class FailedPrecondition(RecmeshError, grpc_code=grpc.StatusCode.FAILED_PRECONDITION, http_status=409):
    """The system is not in a state where the request can run (e.g. no model loaded yet)."""


class ResourceExhausted(RecmeshError, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, http_status=429):
    """A quota or capacity limit was hit; the caller may retry later."""


class Unavailable(RecmeshError, grpc_code=grpc.StatusCode.UNAVAILABLE, http_status=503):
    """A dependency is down and no useful (degraded) answer exists."""


class DeadlineExceeded(RecmeshError, grpc_code=grpc.StatusCode.DEADLINE_EXCEEDED, http_status=504):
    """The request's budget ran out before any useful answer existed."""


_BY_CODE: dict[grpc.StatusCode, type[RecmeshError]] = {
    cls.grpc_code: cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted, Unavailable, DeadlineExceeded)
}


def from_rpc_error(err: grpc.RpcError) -> RecmeshError:
    """Turn a failed downstream call into the matching RecmeshError (INTERNAL for unmapped codes)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or ""
    cls = _BY_CODE.get(code, RecmeshError)
    return cls(details or f"downstream call failed: {code.name}")


def as_recmesh_error(exc: BaseException) -> RecmeshError | None:
    """What ``exc`` tells a caller, when it is not a bug: a RecmeshError as it is, a failed downstream call with
    its code, a model version the registry does not have as NotFound naming it; None for anything else."""
    if isinstance(exc, RecmeshError):
        return exc
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc)
    if isinstance(exc, VersionNotAvailable):  # cores call registry.get(version) directly
        return NotFound(str(exc))
    return None


def rpc_status(exc: BaseException, where: str) -> tuple[grpc.StatusCode, str]:
    """The (code, details) a server answers for ``exc`` raised in ``where`` (a method path).

    A known error (see :func:`as_recmesh_error`) keeps its code and message. Anything else is INTERNAL: the
    traceback is logged here, and the caller is told nothing about our internals but the request id.
    """
    known = as_recmesh_error(exc)
    if known is not None and known.grpc_code is not grpc.StatusCode.INTERNAL:
        logger.debug("%s: %s: %s", where, known.grpc_code.name, known.message)
        return known.grpc_code, known.message
    logger.error("unhandled error in %s", where, exc_info=exc)
    rid = get_request_id()
    return grpc.StatusCode.INTERNAL, f"internal error (request_id={rid})" if rid else "internal error"
