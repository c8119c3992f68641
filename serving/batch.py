"""Batch calls of the stage services: several independent requests in one RPC, each answered on its own.

The gateway sends the requests that arrived while its previous call to a stage was in flight as ONE batch call
(BatchGetEmbeddings, BatchRetrieveCandidates, BatchRank): ``requests`` and, in the same order, one ``BatchMember``
each (request id, milliseconds left) or none at all. Each member gets a ``response`` equal to the single call's,
or a ``BatchError`` with the code and message the single call would have answered; one member's error fails
only that member.

Usage::

    async def BatchRank(self, request, context):
        return pb.BatchRankResponse(results=await answer_each(request, self._rank, pb.RankResult, BATCH_RANK))

    # members that share their work (one Redis round trip): computed together, then finished one by one
    results = await answer_together(request, lookup_many, to_response, pb.GetEmbeddingsResult, BATCH_GET)

For every member, in order: its request id is bound (serving.logs) while it is handled, so its log lines carry it
(no request id: the call's); a member whose ``timeout_ms`` has run out since the call was received is answered
DEADLINE_EXCEEDED without being computed; an exception becomes the status :func:`serving.errors.rpc_status` names
(a bug is INTERNAL naming the member's request id, its traceback logged once). A call with more than
MAX_BATCH_MEMBERS requests, or with members that are not one per request, is INVALID_ARGUMENT as a whole.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import grpc

from recmesh.v1.batch_pb2 import BatchError, BatchMember
from serving.errors import InvalidArgument, rpc_status
from serving.limits import MAX_BATCH_MEMBERS
from serving.logs import clean_request_id, get_request_id, request_id_var, set_request_id

log = logging.getLogger(__name__)

clock: Callable[[], float] = time.monotonic  # the members' clock (a seam for tests)

Request = TypeVar("Request")
Request_co = TypeVar("Request_co", covariant=True)
Response = TypeVar("Response")
Response_contra = TypeVar("Response_contra", contravariant=True)
Outcome = TypeVar("Outcome")
Result = TypeVar("Result")
Result_co = TypeVar("Result_co", covariant=True)


class BatchRequest(Protocol[Request_co]):
    """A BatchXxxRequest: the requests and their members."""

    @property
    def requests(self) -> Sequence[Request_co]: ...

    @property
    def members(self) -> Sequence[BatchMember]: ...


class ResultType(Protocol[Response_contra, Result_co]):
    """An XxxResult message class: ``oneof result { XxxResponse response; BatchError error; }``."""

    def __call__(self, *, response: Response_contra = ..., error: BatchError = ...) -> Result_co: ...


async def answer_each(
    call: BatchRequest[Request],
    handle: Callable[[Request], Awaitable[Response]],
    result_type: ResultType[Response, Result],
    where: str,
) -> list[Result]:
    """Each member answered by ``handle(request)`` (what the single call does), one after the other; a member's
    time is checked just before it is handled. ``where`` is the method path (for logs)."""
    return await _Batch(call).answer(handle, result_type, where)


async def answer_together(
    call: BatchRequest[Request],
    compute: Callable[[Sequence[Request]], Awaitable[Sequence[Outcome | Exception]]],
    finish: Callable[[Outcome], Response],
    result_type: ResultType[Response, Result],
    where: str,
) -> list[Result]:
    """Members that share their work: every member's time is checked first, ``compute`` gets the requests still
    in time and returns one outcome each (or the exception that fails that member alone), then each member is
    answered ``finish(outcome)`` in order. An exception ``compute`` raises fails the whole call."""
    batch = _Batch(call)
    late = [batch.late(i) for i in range(len(call.requests))]
    outcomes = iter(await compute([r for r, error in zip(call.requests, late, strict=True) if error is None]))

    async def handle(_request: Request) -> Response:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return finish(outcome)

    return await batch.answer(handle, result_type, where, late)


class _Batch:
    """One batch call: its shape checked, its receipt time, each member's request id and time left."""

    def __init__(self, call: BatchRequest[Any]) -> None:
        self.received = clock()
        self.requests, self.members = call.requests, call.members
        n, m = len(self.requests), len(self.members)
        if n > MAX_BATCH_MEMBERS:
            raise InvalidArgument(f"at most {MAX_BATCH_MEMBERS} requests per batch call, got {n}")
        if m and m != n:
            raise InvalidArgument(f"{m} members for {n} requests: give one member per request, or none")
        self.call_request_id = get_request_id()

    def late(self, i: int) -> BatchError | None:
        """DEADLINE_EXCEEDED if member ``i``'s timeout_ms has run out since the call was received, else None."""
        timeout_ms = self.members[i].timeout_ms if self.members else 0
        if not timeout_ms:
            return None
        elapsed_ms = (clock() - self.received) * 1000
        if elapsed_ms < timeout_ms:
            return None
        return BatchError(
            code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
            message=f"deadline exceeded: the member's {timeout_ms} ms ran out before it was reached "
            f"({elapsed_ms:.1f} ms after the batch call was received); not computed",
        )

    @contextlib.contextmanager
    def member(self, i: int) -> Iterator[None]:
        """Member ``i``'s request id bound (the call's when it has none) while it is handled."""
        own = clean_request_id(self.members[i].request_id) if self.members else None
        token = set_request_id(own or self.call_request_id)
        try:
            yield
        finally:
            request_id_var.reset(token)

    async def answer(
        self,
        handle: Callable[[Any], Awaitable[Response]],
        result_type: ResultType[Response, Result],
        where: str,
        late: Sequence[BatchError | None] | None = None,
    ) -> list[Result]:
        """Every member in order: its ``late`` error (checked now when None is given), else ``handle(request)``
        as a response, or the error it raised."""
        results: list[Result] = []
        for i, request in enumerate(self.requests):
            with self.member(i):
                error = self.late(i) if late is None else late[i]
                if error is None:
                    try:
                        results.append(result_type(response=await handle(request)))
                        continue
                    except Exception as exc:
                        code, message = rpc_status(exc, f"{where} (member {i})")
                        error = BatchError(code=code.value[0], message=message)
                else:
                    log.debug("batch member out of time", extra={"member": i, "method": where})
                results.append(result_type(error=error))
        return results
