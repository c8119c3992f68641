"""One error hierarchy for every recmesh process, and the gRPC status a server answers for an exception.

Each error knows its gRPC status code and its HTTP status, so the gRPC servers (serving.interceptor) and the REST
gateway map them in one place each. Cores raise these; they never import grpc themselves for errors.

An error may carry details in the shapes of google.rpc's error model (the convention of Google's APIs): the fields
of the request at fault (``google.rpc.BadRequest`` field violations, on InvalidArgument) and when to retry
(``google.rpc.RetryInfo``, on ResourceExhausted and Unavailable). gRPC answers carry them as a ``google.rpc.Status``
in the ``grpc-status-details-bin`` trailer (:func:`status_trailer`; a client reads them back with
``grpc_status.rpc_status.from_call``), REST answers as JSON (:func:`json_details`).

Usage::

    raise InvalidArgument("k must be >= 0, got -1", field="k")        # -> INVALID_ARGUMENT / 400, one violation
    raise NotFound("model version v7 is not loaded")                  # -> NOT_FOUND / 404
    raise ResourceExhausted("over the rate limit", retry_after_s=1)   # -> RESOURCE_EXHAUSTED / 429, RetryInfo
    code, details = rpc_status(exc, "/recmesh.v1.RankingService/Rank")  # what a server answers for `exc`
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from recmesh.registry import VersionNotAvailable
from serving.logs import get_request_id

logger = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"  # where gRPC carries a google.rpc.Status (grpc_status' key)
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


@dataclass(frozen=True)
class FieldViolation:
    """One field of a request at fault: its path as the API names it (``k``, ``session_item_ids[3]``,
    ``options.budget_ms``) and what is wrong with it."""

    field: str
    description: str


class RecmeshError(Exception):
    """Base class. Used as is, it is an internal error (INTERNAL / 500).

    A subclass names its statuses in its bases, ``class Gone(RecmeshError, grpc_code=..., http_status=410)``; a
    subclass of a subclass keeps its parent's.
    """

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500
    violations: tuple[FieldViolation, ...] = ()  # the request's fields at fault (InvalidArgument)
    retry_after_s: float | None = None  # when a retry may succeed (ResourceExhausted, Unavailable)

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
    """The caller's input is malformed or out of range. ``field`` names the one field at fault (the message is
    its description); ``violations`` lists several."""

    def __init__(self, message: str = "", field: str = "", violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations) or ((FieldViolation(field, self.message),) if field else ())


class NotFound(RecmeshError, grpc_code=grpc.StatusCode.NOT_FOUND, http_status=404):
    """Something the caller named does not exist (an item, a model version that is not loaded)."""


class FailedPrecondition(RecmeshError, grpc_code=grpc.StatusCode.FAILED_PRECONDITION, http_status=409):
    """The system is not in a state where the request can run (e.g. no model loaded yet)."""


class _Retryable(RecmeshError):
    """An error a retry may cure; ``retry_after_s`` (when known) says when to try again. A subclass may set a
    default: ``class RateLimited(ResourceExhausted): retry_after_s = 1.0``."""

    def __init__(self, message: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class ResourceExhausted(_Retryable, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, http_status=429):
    """A quota or capacity limit was hit; the caller may retry later."""


class Unavailable(_Retryable, grpc_code=grpc.StatusCode.UNAVAILABLE, http_status=503):
    """A dependency is down and no useful (degraded) answer exists."""


class Unauthenticated(RecmeshError, grpc_code=grpc.StatusCode.UNAUTHENTICATED, http_status=401):
    """No credential, or one that names no valid key (unknown, wrong secret, expired). Says nothing about which."""


class PermissionDenied(RecmeshError, grpc_code=grpc.StatusCode.PERMISSION_DENIED, http_status=403):
    """A valid key without the scope the call needs (the message names the scope)."""


class DeadlineExceeded(RecmeshError, grpc_code=grpc.StatusCode.DEADLINE_EXCEEDED, http_status=504):
    """The request's budget ran out before any useful answer existed."""


_BY_CODE: dict[grpc.StatusCode, type[RecmeshError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
    )
}


def from_rpc_error(err: grpc.RpcError) -> RecmeshError:
    """Turn a failed downstream call into the matching RecmeshError (INTERNAL for unmapped codes), with the
    field violations and retry delay its status details carry."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or ""
    error = _BY_CODE.get(code, RecmeshError)(details or f"downstream call failed: {code.name}")
    violations, retry_after_s = details_of_trailer(err.trailing_metadata() if hasattr(err, "trailing_metadata") else ())
    if violations and isinstance(error, InvalidArgument):
        error.violations = violations
    if retry_after_s is not None and isinstance(error, _Retryable):
        error.retry_after_s = retry_after_s
    return error


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


# ------------------------------------------------------------------------------------------- status details
def json_details(error: RecmeshError) -> list[dict[str, Any]]:
    """The error's details as google.rpc's JSON mapping (REST): a BadRequest, a RetryInfo, or nothing."""
    details: list[dict[str, Any]] = []
    if error.violations:
        violations = [{"field": v.field, "description": v.description} for v in error.violations]
        details.append({"@type": BAD_REQUEST_TYPE, "fieldViolations": violations})
    if error.retry_after_s is not None:
        details.append({"@type": RETRY_INFO_TYPE, "retryDelay": f"{error.retry_after_s:g}s"})
    return details


def retry_after_header(error: RecmeshError) -> str | None:
    """The HTTP ``Retry-After`` value (whole seconds, at least 1) of an error that knows when to retry."""
    return None if error.retry_after_s is None else str(max(1, math.ceil(error.retry_after_s)))


def status_trailer(error: RecmeshError | None, code: grpc.StatusCode, message: str) -> tuple[tuple[str, bytes], ...]:
    """The ``grpc-status-details-bin`` trailer of an answer (code, message) for ``error``; empty when it has no
    details (the trailer's code and message must equal the call's: grpc_status checks them)."""
    if error is None or code is grpc.StatusCode.INTERNAL:
        return ()
    status = status_pb2.Status(code=code.value[0], message=message)
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        status.details.append(_packed(bad))
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        status.details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    if not status.details:
        return ()
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def details_of_trailer(metadata: Iterable[tuple[str, Any]] | None) -> tuple[tuple[FieldViolation, ...], float | None]:
    """The field violations and retry delay of a ``grpc-status-details-bin`` trailer (nothing when absent)."""
    violations: list[FieldViolation] = []
    retry_after_s = None
    for key, value in metadata or ():
        if key != STATUS_DETAILS_KEY:
            continue
        for detail in status_pb2.Status.FromString(value).details:
            bad, retry = error_details_pb2.BadRequest(), error_details_pb2.RetryInfo()
            if detail.Unpack(bad):
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif detail.Unpack(retry):
                retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
    return tuple(violations), retry_after_s


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
