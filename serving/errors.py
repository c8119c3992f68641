"""One error hierarchy for every recmesh process.

Each error knows its gRPC status code and its HTTP status, so the gRPC servicers (via :func:`grpc_errors`)
and the REST gateway map them in one place. Cores raise these; they never import grpc themselves for errors.

    raise InvalidArgument("k must be >= 0, got -1")   # -> INVALID_ARGUMENT / 400
    raise NotFound("model version v7 is not loaded")  # -> NOT_FOUND / 404
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc
import grpc.aio

from serving.logs import get_request_id

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class RecmeshError(Exception):
    """Base class. Used as is, it is an internal error (INTERNAL / 500)."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or type(self).__name__


class InvalidArgument(RecmeshError):
    """The caller's input is malformed or out of range."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class NotFound(RecmeshError):
    """Something the caller named does not exist (an item, a model version that is not loaded)."""

    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class FailedPrecondition(RecmeshError):
    """The system is not in a state where the request can run (e.g. no model loaded yet)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class ResourceExhausted(RecmeshError):
    """A quota or capacity limit was hit; the caller may retry later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class Unavailable(RecmeshError):
    """A dependency is down and no useful (degraded) answer exists."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class DeadlineExceeded(RecmeshError):
    """The request's budget ran out before any useful answer existed."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


_BY_CODE: dict[grpc.StatusCode, type[RecmeshError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
    )
}


def from_rpc_error(err: grpc.RpcError) -> RecmeshError:
    """Turn a failed downstream call into the matching RecmeshError (INTERNAL for unmapped codes)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or ""
    cls = _BY_CODE.get(code, RecmeshError)
    return cls(details or f"downstream call failed: {code.name}")


def grpc_status_of(exc: BaseException) -> grpc.StatusCode:
    """The status code a servicer answers for ``exc`` (INTERNAL for anything unexpected)."""
    if isinstance(exc, RecmeshError):
        return exc.grpc_code
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return from_rpc_error(exc).grpc_code
    return grpc.StatusCode.INTERNAL


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, where: str) -> None:
    if isinstance(exc, grpc.RpcError) and not isinstance(exc, RecmeshError):
        exc = from_rpc_error(exc)
    if isinstance(exc, RecmeshError) and exc.grpc_code is not grpc.StatusCode.INTERNAL:
        logger.debug("%s: %s: %s", where, exc.grpc_code.name, exc.message)
        code, message = exc.grpc_code, exc.message
    else:
        # Unexpected: log the traceback here, tell the caller nothing about our internals.
        logger.error("unhandled error in %s", where, exc_info=exc)
        rid = get_request_id()
        code, message = (
            grpc.StatusCode.INTERNAL,
            (f"internal error (request_id={rid})" if rid else "internal error"),
        )
    await context.abort(code, message)


def grpc_errors(fn: F) -> F:
    """Decorate an asyncio servicer method so errors become gRPC statuses.

    ``RecmeshError`` subclasses -> ``context.abort(exc.grpc_code, message)``; a failed downstream call
    keeps its code; anything else -> INTERNAL with the traceback logged, never sent. Works for unary-unary and
    stream-unary handlers (``async def M(self, request_or_iterator, context)``) and for unary-stream handlers
    written as async generators. The context must be the last positional argument.
    """
    where = fn.__qualname__

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def gen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(args[-1], exc, where)

        return cast(F, gen_wrapper)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except grpc.aio.AbortError:
            raise  # the handler aborted on its own
        except Exception as exc:
            await _abort(args[-1], exc, where)

    return cast(F, wrapper)
